//! `schema/` is the one authority on tables: every table the migrations create is declared with
//! diesel's `table!` in `schema/src/tables.rs`, with the same columns in the same order, of the
//! same types and nullability, and the same primary key; and nothing else is declared.

use std::collections::BTreeMap;

use diesel::sql_types::{Bool, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use recsys::config::Secret;

use crate::helpers::fresh_database;

/// A table as declared or as migrated: its primary key and its columns in order, each with its
/// Postgres type name (`udt_name`: `int8`, `_int8` for an array of them) and nullability.
#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    primary_key: Vec<String>,
    columns: Vec<(String, String, bool)>,
}

/// The tables of `schema/src/tables.rs`, read from its `table!` blocks.
fn declared() -> BTreeMap<String, Table> {
    let text = include_str!("../../schema/src/tables.rs");
    let mut tables = BTreeMap::new();
    let mut current: Option<(String, Table)> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("///") || line.starts_with("//") {
            continue;
        }
        if let Some((name, rest)) = line.split_once(" (") {
            if let Some(key) = rest.strip_suffix(") {") {
                let primary_key = key.split(',').map(|k| k.trim().to_string()).collect();
                current = Some((
                    name.to_string(),
                    Table {
                        primary_key,
                        columns: Vec::new(),
                    },
                ));
                continue;
            }
        }
        if let (Some((column, ty)), Some((_, table))) = (line.split_once(" -> "), &mut current) {
            let ty = ty.trim_end_matches(',');
            let (ty, nullable) = match ty.strip_prefix("Nullable<") {
                Some(inner) => (inner.trim_end_matches('>'), true),
                None => (ty, false),
            };
            table
                .columns
                .push((column.to_string(), postgres_type(ty), nullable));
            continue;
        }
        if line == "}" {
            if let Some((name, table)) = current.take() {
                tables.insert(name, table);
            }
        }
    }
    tables
}

/// The Postgres type name of a diesel SQL type as `tables.rs` writes it.
fn postgres_type(diesel: &str) -> String {
    if let Some(inner) = diesel
        .strip_prefix("Array<")
        .and_then(|t| t.strip_suffix('>'))
    {
        return format!("_{}", postgres_type(inner));
    }
    match diesel {
        "Uuid" => "uuid",
        "Text" => "text",
        "Int4" => "int4",
        "Int8" => "int8",
        "Float8" => "float8",
        "Bool" => "bool",
        "Numeric" => "numeric",
        "Timestamptz" => "timestamptz",
        "Bytea" => "bytea",
        "Jsonb" => "jsonb",
        other => panic!("no Postgres name for the diesel type {other}"),
    }
    .to_string()
}

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    udt_name: String,
    #[diesel(sql_type = Bool)]
    nullable: bool,
}

#[derive(QueryableByName)]
struct KeyColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

/// The tables of a freshly migrated database, without diesel's own bookkeeping.
async fn migrated() -> BTreeMap<String, Table> {
    let (url, _) = fresh_database().await;
    recsys::db::migrate(&Secret::new(url.clone()))
        .await
        .expect("migrations apply");
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let columns: Vec<Column> = diesel::sql_query(
        "SELECT table_name::text, column_name::text, udt_name::text, \
                is_nullable = 'YES' AS nullable \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' \
         ORDER BY table_name, ordinal_position",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let keys: Vec<KeyColumn> = diesel::sql_query(
        "SELECT c.conrelid::regclass::text AS table_name, a.attname::text AS column_name \
         FROM pg_constraint c \
         CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum \
         WHERE c.contype = 'p' AND c.connamespace = 'public'::regnamespace \
           AND c.conrelid::regclass::text <> '__diesel_schema_migrations' \
         ORDER BY 1, k.ord",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for c in columns {
        tables.entry(c.table_name).or_default().columns.push((
            c.column_name,
            c.udt_name,
            c.nullable,
        ));
    }
    for k in keys {
        tables
            .entry(k.table_name)
            .or_default()
            .primary_key
            .push(k.column_name);
    }
    tables
}

/// Every migrated table is declared in `schema/src/tables.rs` exactly as the database has it,
/// and `tables::ALL` names them all.
#[actix_web::test]
async fn every_table_is_declared_in_the_schema_crate_as_migrated() {
    let declared = declared();
    let migrated = migrated().await;
    assert_eq!(
        declared.keys().collect::<Vec<_>>(),
        migrated.keys().collect::<Vec<_>>(),
        "declared tables against migrated ones"
    );
    for (name, table) in &migrated {
        assert_eq!(&declared[name], table, "table {name}");
    }
    let mut all: Vec<&str> = recsys_schema::tables::ALL.to_vec();
    all.sort_unstable();
    assert_eq!(all, migrated.keys().map(String::as_str).collect::<Vec<_>>());
}
