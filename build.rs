//! Rebuilds the crate when a migration is added or changed: `db::MIGRATIONS` embeds the
//! `migrations/` folder at compile time, and cargo does not otherwise watch it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
