//! The event envelope carried on `user-updates` and `product-updates`, and every payload.
//!
//! A record value is one JSON object:
//! `{event_id, type, occurred_at, key, schema_version: 1, data}`; the Kafka message key equals
//! `key` (the user id or product id), so all events of one entity stay in order on one partition.
//! No event carries an email address or a password.

use bigdecimal::BigDecimal;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::topics;

/// The version of the envelope and payload shapes defined here.
pub const SCHEMA_VERSION: u32 = 1;

/// One record value on either topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event (copies of one record share it). A UUIDv7: time-ordered, so the
    /// indexes keyed by it (`user_activity`, `outbox`) grow at their right edge instead of
    /// splitting pages everywhere.
    pub event_id: Uuid,
    /// The `type` and `data` fields.
    #[serde(flatten)]
    pub event: Event,
    /// When the change was committed (RFC 3339, UTC, microseconds).
    pub occurred_at: DateTime<Utc>,
    /// The entity id, also the Kafka message key.
    pub key: String,
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
}

impl Envelope {
    /// Wraps `event` with a fresh id, the current time and the event's key.
    pub fn new(event: Event) -> Self {
        Self::at(event, Utc::now())
    }

    /// Wraps `event` with a fresh id at `occurred_at` (truncated to microseconds, as Postgres keeps it).
    pub fn at(event: Event, occurred_at: DateTime<Utc>) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            key: event.key().to_string(),
            event,
            occurred_at: occurred_at.trunc_subsecs(6),
            schema_version: SCHEMA_VERSION,
        }
    }

    /// The record value: the envelope as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    /// Reads a record value. Accepts and refuses exactly what `serde_json::from_slice` with the
    /// derived `Deserialize` does, in one pass and about three times as fast: the derived one
    /// (for `#[serde(flatten)]`) first copies every field into an intermediate tree; this one
    /// reads the envelope's fields in place and, when `type` comes before `data` (as
    /// [`Envelope::to_json`] writes them), `data` straight into the payload type `type` names.
    /// A `data` that comes first is kept as raw JSON and read once `type` is known.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Envelope> {
        use serde::de::Error as _;
        use serde::Deserializer as _;
        // One UTF-8 check of the whole value instead of one per string read.
        let text = std::str::from_utf8(bytes).map_err(serde_json::Error::custom)?;
        let mut de = serde_json::Deserializer::from_str(text);
        let envelope = (&mut de).deserialize_map(wire::EnvelopeVisitor)?;
        de.end()?;
        Ok(envelope)
    }
}

/// The one-pass reader of [`Envelope::from_json`].
mod wire {
    use std::fmt;

    use chrono::{DateTime, Utc};
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use uuid::Uuid;

    use super::{Envelope, Event, EventType};

    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "snake_case")]
    enum Field {
        EventId,
        #[serde(rename = "type")]
        Type,
        Data,
        OccurredAt,
        Key,
        SchemaVersion,
        #[serde(other)]
        Other,
    }

    /// Reads a string field without copying it and turns it into a value with `parse`.
    fn parse_str<'de, D, T>(
        d: D,
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, D::Error>
    where
        D: de::Deserializer<'de>,
    {
        struct StrVisitor<T> {
            expecting: &'static str,
            parse: fn(&str) -> Result<T, String>,
        }
        impl<T> Visitor<'_> for StrVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(self.expecting)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
                (self.parse)(v).map_err(E::custom)
            }
        }
        d.deserialize_str(StrVisitor { expecting, parse })
    }

    /// The `type` value.
    struct Kind(EventType);

    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            parse_str(d, "an event type", |v| {
                EventType::from_name(v)
                    .map(Kind)
                    .ok_or_else(|| format!("unknown event type `{v}`"))
            })
        }
    }

    /// `occurred_at` (RFC 3339).
    struct Instant(DateTime<Utc>);

    impl<'de> Deserialize<'de> for Instant {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            parse_str(d, "an RFC 3339 time", |v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| Instant(t.with_timezone(&Utc)))
                    .map_err(|e| e.to_string())
            })
        }
    }

    /// Reads `data` as the payload of the event type `.0`.
    struct Payload(EventType);

    impl<'de> DeserializeSeed<'de> for Payload {
        type Value = Event;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Event, D::Error> {
            Ok(match self.0 {
                EventType::UserRegistered => Event::UserRegistered(Deserialize::deserialize(d)?),
                EventType::UserUpdated => Event::UserUpdated(Deserialize::deserialize(d)?),
                EventType::UserActivity => Event::UserActivity(Deserialize::deserialize(d)?),
                EventType::ProductCreated => Event::ProductCreated(Deserialize::deserialize(d)?),
                EventType::ProductUpdated => Event::ProductUpdated(Deserialize::deserialize(d)?),
                EventType::ProductDeleted => Event::ProductDeleted(Deserialize::deserialize(d)?),
            })
        }
    }

    /// `data` as read so far: the event, or its raw text while `type` is not yet known.
    enum Data<'de> {
        Event(Event),
        Raw(&'de RawValue),
    }

    pub(super) struct EnvelopeVisitor;

    /// Sets `slot` once; a second occurrence of the field is an error, as in the derived reader.
    fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
        if slot.replace(value).is_some() {
            return Err(E::duplicate_field(name));
        }
        Ok(())
    }

    impl<'de> Visitor<'de> for EnvelopeVisitor {
        type Value = Envelope;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an event envelope")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
            let mut event_id: Option<Uuid> = None;
            let mut kind: Option<EventType> = None;
            let mut data: Option<Data<'de>> = None;
            let mut occurred_at: Option<DateTime<Utc>> = None;
            let mut key: Option<String> = None;
            let mut schema_version: Option<u32> = None;
            while let Some(field) = map.next_key::<Field>()? {
                match field {
                    Field::EventId => once(&mut event_id, "event_id", map.next_value()?)?,
                    Field::Type => once(&mut kind, "type", map.next_value::<Kind>()?.0)?,
                    Field::Data => {
                        let value = match kind {
                            Some(k) => Data::Event(map.next_value_seed(Payload(k))?),
                            None => Data::Raw(map.next_value()?),
                        };
                        once(&mut data, "data", value)?
                    }
                    Field::OccurredAt => once(
                        &mut occurred_at,
                        "occurred_at",
                        map.next_value::<Instant>()?.0,
                    )?,
                    Field::Key => once(&mut key, "key", map.next_value()?)?,
                    Field::SchemaVersion => {
                        once(&mut schema_version, "schema_version", map.next_value()?)?
                    }
                    Field::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
            let event = match data.ok_or_else(|| de::Error::missing_field("data"))? {
                Data::Event(event) => event,
                Data::Raw(raw) => {
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    Payload(kind)
                        .deserialize(&mut de)
                        .map_err(de::Error::custom)?
                }
            };
            Ok(Envelope {
                event_id: event_id.ok_or_else(|| de::Error::missing_field("event_id"))?,
                event,
                occurred_at: occurred_at.ok_or_else(|| de::Error::missing_field("occurred_at"))?,
                key: key.ok_or_else(|| de::Error::missing_field("key"))?,
                schema_version: schema_version
                    .ok_or_else(|| de::Error::missing_field("schema_version"))?,
            })
        }
    }
}

/// The `type` of an event together with its `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// A user account was created.
    #[serde(rename = "user.registered")]
    UserRegistered(UserRegistered),
    /// A user's profile changed.
    #[serde(rename = "user.updated")]
    UserUpdated(UserUpdated),
    /// A user viewed, carted, uncarted or bought a product.
    #[serde(rename = "user.activity")]
    UserActivity(UserActivity),
    /// A product was added to the catalog.
    #[serde(rename = "product.created")]
    ProductCreated(ProductSnapshot),
    /// A product changed; `data` is the whole new state.
    #[serde(rename = "product.updated")]
    ProductUpdated(ProductSnapshot),
    /// A product was removed from the catalog.
    #[serde(rename = "product.deleted")]
    ProductDeleted(ProductDeleted),
}

/// The kinds of event: the one list of their `type` names, in one order. The envelope's
/// reader, the services' decoders and the analytics counters all go through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    UserRegistered,
    UserUpdated,
    UserActivity,
    ProductCreated,
    ProductUpdated,
    ProductDeleted,
}

impl EventType {
    /// Every kind, in declaration order.
    pub const ALL: [EventType; 6] = [
        EventType::UserRegistered,
        EventType::UserUpdated,
        EventType::UserActivity,
        EventType::ProductCreated,
        EventType::ProductUpdated,
        EventType::ProductDeleted,
    ];

    /// Every `type` name, in declaration order.
    pub const NAMES: [&'static str; 6] = {
        let mut names = [""; 6];
        let mut i = 0;
        while i < Self::ALL.len() {
            names[i] = Self::ALL[i].name();
            i += 1;
        }
        names
    };

    /// The `type` value on the wire (`user.registered`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            EventType::UserRegistered => "user.registered",
            EventType::UserUpdated => "user.updated",
            EventType::UserActivity => "user.activity",
            EventType::ProductCreated => "product.created",
            EventType::ProductUpdated => "product.updated",
            EventType::ProductDeleted => "product.deleted",
        }
    }

    /// The kind named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl Event {
    /// The kind of this event.
    pub fn event_type(&self) -> EventType {
        match self {
            Event::UserRegistered(_) => EventType::UserRegistered,
            Event::UserUpdated(_) => EventType::UserUpdated,
            Event::UserActivity(_) => EventType::UserActivity,
            Event::ProductCreated(_) => EventType::ProductCreated,
            Event::ProductUpdated(_) => EventType::ProductUpdated,
            Event::ProductDeleted(_) => EventType::ProductDeleted,
        }
    }

    /// The `type` value of this event.
    pub fn type_name(&self) -> &'static str {
        self.event_type().name()
    }

    /// The logical topic (without prefix) this event is published on.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::UserRegistered(_) | Event::UserUpdated(_) | Event::UserActivity(_) => {
                topics::USER_UPDATES
            }
            Event::ProductCreated(_) | Event::ProductUpdated(_) | Event::ProductDeleted(_) => {
                topics::PRODUCT_UPDATES
            }
        }
    }

    /// The id of the entity the event is about: the message key.
    pub fn key(&self) -> Uuid {
        match self {
            Event::UserRegistered(e) => e.user_id,
            Event::UserUpdated(e) => e.user_id,
            Event::UserActivity(e) => e.user_id,
            Event::ProductCreated(e) | Event::ProductUpdated(e) => e.product_id,
            Event::ProductDeleted(e) => e.product_id,
        }
    }
}

/// `user.registered`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub name: String,
}

/// `user.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdated {
    pub user_id: Uuid,
    /// The name after the update.
    pub name: String,
    /// Names of the fields that changed (`name`, `email`, `password`, `role`); never their values
    /// for `email` and `password`.
    pub changed: Vec<String>,
}

/// What a user did with a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    View,
    CartAdd,
    CartRemove,
    Purchase,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 4] = [
        Action::View,
        Action::CartAdd,
        Action::CartRemove,
        Action::Purchase,
    ];

    /// The wire and database name (`view`, `cart_add`, `cart_remove`, `purchase`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::CartAdd => "cart_add",
            Action::CartRemove => "cart_remove",
            Action::Purchase => "purchase",
        }
    }
}

/// `user.activity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserActivity {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub action: Action,
    /// 1..=1000.
    pub quantity: u32,
}

/// `product.created` and `product.updated`: the product's state after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSnapshot {
    pub product_id: Uuid,
    pub name: String,
    /// Decimal string with two places, e.g. `"19.99"`.
    #[serde(with = "price_string")]
    pub price: BigDecimal,
    pub category: Option<String>,
    /// 1 on creation, +1 on every change.
    pub version: i32,
}

/// `product.deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductDeleted {
    pub product_id: Uuid,
    /// The version the deletion gave the product.
    pub version: i32,
}

/// Money on the wire: a decimal string with exactly two places; never a float.
pub mod price_string {
    use bigdecimal::BigDecimal;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::str::FromStr;

    /// Formats `price` with exactly two decimal places (`0` is `"0.00"`), rounding toward
    /// zero past the second place.
    pub fn format(price: &BigDecimal) -> String {
        let (units, scale) = price.with_scale(2).as_bigint_and_exponent();
        debug_assert_eq!(scale, 2);
        let digits = units.magnitude().to_string();
        let digits = format!("{digits:0>3}");
        let (whole, cents) = digits.split_at(digits.len() - 2);
        let sign = if units.sign() == bigdecimal::num_bigint::Sign::Minus {
            "-"
        } else {
            ""
        };
        format!("{sign}{whole}.{cents}")
    }

    /// Serializes as `"12.30"`.
    pub fn serialize<S: Serializer>(price: &BigDecimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(price))
    }

    /// Accepts the string form only.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BigDecimal, D::Error> {
        let s = String::deserialize(d)?;
        BigDecimal::from_str(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    /// An envelope serializes to the documented flat shape and reads back unchanged.
    fn envelope_round_trips_in_the_documented_shape() {
        let product_id = Uuid::new_v4();
        let envelope = Envelope::new(Event::ProductCreated(ProductSnapshot {
            product_id,
            name: "Lamp".into(),
            price: BigDecimal::from_str("19.9").unwrap(),
            category: Some("home".into()),
            version: 1,
        }));
        let value: serde_json::Value = serde_json::from_str(&envelope.to_json()).unwrap();
        assert_eq!(value["type"], "product.created");
        assert_eq!(value["key"], product_id.to_string());
        assert_eq!(value["schema_version"], 1);
        assert_eq!(value["data"]["price"], "19.90");
        assert!(value["occurred_at"].as_str().unwrap().ends_with('Z'));
        let back: Envelope = serde_json::from_value(value).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    /// The fast reader agrees with the derived one: the same envelope from every valid record,
    /// an error for every invalid one.
    fn the_fast_reader_agrees_with_the_derived_one() {
        let user_id = Uuid::new_v4();
        let valid = [
            Envelope::new(Event::UserActivity(UserActivity {
                user_id,
                product_id: Uuid::new_v4(),
                action: Action::CartAdd,
                quantity: 3,
            })),
            Envelope::new(Event::UserUpdated(UserUpdated {
                user_id,
                name: "Zoë \"Z\" Ünal".into(),
                changed: vec!["name".into()],
            })),
            Envelope::new(Event::ProductCreated(ProductSnapshot {
                product_id: Uuid::new_v4(),
                name: "Lamp".into(),
                price: BigDecimal::from_str("19.9").unwrap(),
                category: None,
                version: 1,
            })),
        ];
        for envelope in &valid {
            let json = envelope.to_json();
            assert_eq!(&Envelope::from_json(json.as_bytes()).unwrap(), envelope);
            let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
            value["extra"] = "ignored by both".into();
            value["occurred_at"] = "2026-11-25T08:56:43.002839+01:00".into();
            let text = value.to_string();
            let derived: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!(Envelope::from_json(text.as_bytes()).unwrap(), derived);
        }
        let json = valid[0].to_json();
        let broken = [
            "".to_string(),
            "[]".to_string(),
            json.replace("user.activity", "user.exploded"),
            json.replace("\"quantity\":3", "\"quantity\":-3"),
            json.replace("\"quantity\":3", "\"quantity\":3,\"extra\":1"),
            json.replace("cart_add", "cart_smash"),
            json.replace("\"schema_version\":1", "\"schema_version\":\"1\""),
            json.replace("\"occurred_at\":\"", "\"occurred_at\":\"yesterday "),
            json.replace(",\"key\":", ",\"kee\":"),
        ];
        for text in &broken {
            assert!(
                serde_json::from_str::<Envelope>(text).is_err(),
                "derived accepts {text}"
            );
            assert!(
                Envelope::from_json(text.as_bytes()).is_err(),
                "fast accepts {text}"
            );
        }
    }

    #[test]
    /// Prices always carry two places, whatever their scale.
    fn prices_format_with_two_places() {
        for (input, expected) in [
            ("0", "0.00"),
            ("0.5", "0.50"),
            ("7", "7.00"),
            ("19.99", "19.99"),
            ("1234567.8", "1234567.80"),
            ("9999999999.99", "9999999999.99"),
            ("-1.5", "-1.50"),
        ] {
            assert_eq!(
                price_string::format(&BigDecimal::from_str(input).unwrap()),
                expected
            );
        }
    }

    #[test]
    /// Each kind of event is found again by its name; no other name is a kind.
    fn event_types_are_named_once() {
        for kind in EventType::ALL {
            assert_eq!(EventType::from_name(kind.name()), Some(kind));
        }
        assert_eq!(EventType::NAMES[2], "user.activity");
        assert_eq!(EventType::from_name("user.exploded"), None);
    }

    #[test]
    /// Every event type maps to the topic its prefix names.
    fn type_names_match_topics() {
        let user = Event::UserUpdated(UserUpdated {
            user_id: Uuid::nil(),
            name: "a".into(),
            changed: vec![],
        });
        assert_eq!(user.topic(), topics::USER_UPDATES);
        assert_eq!(user.type_name(), "user.updated");
        let deleted = Event::ProductDeleted(ProductDeleted {
            product_id: Uuid::nil(),
            version: 2,
        });
        assert_eq!(deleted.topic(), topics::PRODUCT_UPDATES);
        assert_eq!(deleted.type_name(), "product.deleted");
    }
}
