//! Integration tests of the recsys runtime against the real Postgres, Redis and Apache Kafka.
//!
//! Every test starts its own runtime (ports picked by the OS) on its own database and topic
//! prefix, so tests run in parallel and in any order. Needs the local stack
//! (`scripts/stack.sh up`); `scripts/test.sh` sets it up.

mod actors;
mod analytics;
mod analytics_page;
mod attacks;
mod backup;
mod browser;
mod cache;
mod consumer;
mod cors;
mod dashboards;
mod demo;
mod deploy;
mod docs_page;
mod errors;
mod events;
mod exactness;
mod faults;
mod helpers;
mod idempotency;
mod ingest;
mod kafka;
mod limits;
mod observability;
mod openapi;
mod outbox;
mod products;
mod ranking_lists;
mod rebuild;
mod recommendations;
mod runtime;
mod schema;
mod secured;
mod users;
mod webdriver;
