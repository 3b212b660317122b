//! [`UsersActor`]: owns every write of the users service. Each write and its `user.*` event are
//! committed in one transaction (the outbox), then the relay is woken to publish.
//!
//! Handlers run concurrently (each message returns a future on the actor's arbiter); password
//! hashing runs on the blocking pool so the arbiter never stalls.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, SubsecRound, Utc};
use diesel_async::AsyncConnection;
use recsys_actors::group_commit::{GroupCommit, Limits};
use recsys_actors::observe::{ObservedAddr, ObservedRecipient};
use recsys_actors::outbox_relay::Wake;
use recsys_schema::events::{Action, Envelope, Event, UserActivity, UserRegistered, UserUpdated};
use serde::{Deserialize, Serialize};
use slog::{info, warn, Logger};
use uuid::Uuid;

use super::error::UsersError;
use super::hasher::{HashPassword, HashWorker, VerifyPassword};
use super::store::{self, ActivityRow, UserChanges, UserRow};
use super::throttle::{LoginLimits, LoginThrottle, SharedThrottle};
use crate::auth::{revocations, JwtKeys, Role};
use crate::config::Secret;
use crate::db::{self, DbError, Pool};
use crate::idempotency::{self, Answer, Claim, IdempotencyError};
use crate::outbox;

/// The users actor. Apart from its handles it holds only the login failure counts, which a
/// restart forgets (the lockout then starts over).
pub struct UsersActor {
    pool: Pool,
    keys: JwtKeys,
    /// Woken after each commit; `None` when no relay runs in this process.
    relay: Option<ObservedRecipient<Wake>>,
    /// Runs argon2 off this actor's thread.
    hasher: ObservedAddr<HashWorker>,
    /// Failed logins per email and per client address, counted by this process.
    throttle: LoginThrottle,
    /// The same counts shared through Redis by every runtime hosting users.
    shared: SharedThrottle,
    /// Recorded actions waiting for, or being written in, a group commit.
    activity: GroupCommit<Queued, Result<Answer<Uuid>, UsersError>>,
    logger: Logger,
}

impl UsersActor {
    /// An actor writing through `pool`, issuing tokens with `keys`, locking logins out after
    /// the failures `limits` allow, writing recorded actions in group commits within `activity`.
    pub fn new(
        pool: Pool,
        keys: JwtKeys,
        relay: Option<ObservedRecipient<Wake>>,
        hasher: ObservedAddr<HashWorker>,
        (limits, shared): (LoginLimits, SharedThrottle),
        activity: Limits,
        logger: Logger,
    ) -> Self {
        Self {
            pool,
            keys,
            relay,
            hasher,
            throttle: LoginThrottle::new(limits),
            shared,
            activity: GroupCommit::new("activity", activity),
            logger,
        }
    }

    /// Everything a handler future needs, cloned out of the actor.
    fn ctx(&self) -> Ctx {
        Ctx {
            pool: self.pool.clone(),
            keys: self.keys.clone(),
            relay: self.relay.clone(),
            hasher: self.hasher.clone(),
            logger: self.logger.clone(),
        }
    }
}

#[derive(Clone)]
struct Ctx {
    pool: Pool,
    keys: JwtKeys,
    relay: Option<ObservedRecipient<Wake>>,
    hasher: ObservedAddr<HashWorker>,
    logger: Logger,
}

impl Ctx {
    /// The argon2id hash of `password`, computed by the hasher.
    async fn hash(&self, password: Secret) -> Result<String, UsersError> {
        self.hasher.send(HashPassword(password)).await?
    }

    /// Whether `password` matches `hash`, checked by the hasher.
    async fn verify(&self, password: Secret, hash: Option<String>) -> Result<bool, UsersError> {
        self.hasher.send(VerifyPassword { password, hash }).await?
    }

    fn wake_relay(&self) {
        if let Some(relay) = &self.relay {
            relay.do_send(Wake);
        }
    }
}

impl Actor for UsersActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.logger, "users actor started");
        idempotency::purge_while_running::<Self>(ctx, self.pool.clone(), self.logger.clone());
    }
}

impl Supervised for UsersActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(self.logger, "users actor restarting");
        // The batches being written were cancelled with the old context; queued actions are
        // answered [`UsersError::Restarting`] (their senders drop) rather than left waiting.
        self.activity.reset();
    }
}

/// A user as clients see it: never the password hash.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            email: row.email,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Registered {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    /// A token for the new account.
    pub token: String,
}

/// What a keyed registration records: its answer but the token, which is issued again from
/// these (the same token: it is issued at `created_at`), so that no token is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NewAccount {
    id: Uuid,
    name: String,
    email: String,
    created_at: DateTime<Utc>,
}

impl NewAccount {
    fn registered(self, keys: &JwtKeys) -> Registered {
        Registered {
            token: keys.issue_at(self.id, Role::User, self.created_at, 0),
            id: self.id,
            name: self.name,
            email: self.email,
        }
    }
}

fn email_taken(e: diesel::result::Error) -> UsersError {
    if db::is_unique_violation(&e) {
        UsersError::EmailTaken
    } else {
        e.into()
    }
}

/// Creates an account (already validated: name, lower-case email, 8..=128-char password).
#[derive(Debug, Message)]
#[rtype(result = "Result<Answer<Registered>, UsersError>")]
pub struct RegisterUser {
    pub name: String,
    pub email: String,
    pub password: Option<Secret>,
    /// The request's `Idempotency-Key`, if it sent one.
    pub claim: Option<Claim>,
}

/// Inserts the user and `user.registered`; [`UsersError::EmailTaken`] when the email is taken.
/// A keyed registration already made answers the same again and writes nothing.
impl Handler<RegisterUser> for UsersActor {
    type Result = ResponseFuture<Result<Answer<Registered>, UsersError>>;

    fn handle(&mut self, msg: RegisterUser, _: &mut Self::Context) -> Self::Result {
        let ctx = self.ctx();
        Box::pin(async move {
            // A replay answers before the password is hashed: the hash is most of the work and
            // would be thrown away. The write's own transaction asks again under the key's
            // lock, for a first request that commits in between.
            if msg.claim.is_some() && msg.password.is_some() {
                let claim = msg.claim.clone();
                let recorded = ctx
                    .pool
                    .get()
                    .await?
                    .transaction(async move |conn| -> Result<_, UsersError> {
                        Ok(idempotency::replay::<NewAccount>(conn, claim.as_ref()).await?)
                    })
                    .await?;
                if let Some(account) = recorded {
                    let answer = Answer {
                        value: account,
                        replayed: true,
                    };
                    return Ok(answer.map(|account| account.registered(&ctx.keys)));
                }
            }
            let password_hash = match msg.password {
                Some(p) => Some(ctx.hash(p).await?),
                None => None,
            };
            let row = new_user(msg.name, msg.email, password_hash, Role::User);
            let claim = msg.claim;
            let answer = ctx
                .pool
                .get()
                .await?
                .transaction(async move |conn| -> Result<_, UsersError> {
                    let claim = claim.as_ref();
                    if let Some(account) = idempotency::replay(conn, claim).await? {
                        return Ok(Answer {
                            value: account,
                            replayed: true,
                        });
                    }
                    store::insert(conn, &row).await.map_err(email_taken)?;
                    let event = Event::UserRegistered(UserRegistered {
                        user_id: row.id,
                        name: row.name.clone(),
                    });
                    outbox::enqueue(conn, [&Envelope::at(event, row.created_at)]).await?;
                    let account = NewAccount {
                        id: row.id,
                        name: row.name,
                        email: row.email,
                        created_at: row.created_at,
                    };
                    idempotency::record(conn, claim, &account).await?;
                    Ok(Answer::fresh(account))
                })
                .await?;
            if !answer.replayed {
                ctx.wake_relay();
                info!(ctx.logger, "user registered"; "user_id" => %answer.value.id);
            }
            Ok(answer.map(|account| account.registered(&ctx.keys)))
        })
    }
}

fn new_user(name: String, email: String, password_hash: Option<String>, role: Role) -> UserRow {
    // Postgres keeps microseconds: truncate so the row and the event agree.
    let now = Utc::now().trunc_subsecs(6);
    UserRow {
        id: Uuid::now_v7(),
        name,
        email,
        password_hash,
        role: role.as_str().to_string(),
        created_at: now,
        updated_at: now,
    }
}

/// Checks credentials and answers a token; [`UsersError::BadCredentials`] for every failure.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, UsersError>")]
pub struct Login {
    pub email: String,
    pub password: Secret,
    /// The client's address, for the per-address failure limit (`None`: not known).
    pub client: Option<IpAddr>,
}

/// Verifies the password (also for unknown emails, so timing tells nothing), unless the email
/// or the client address is locked out by earlier failures ([`UsersError::LockedOut`], see [`super::throttle`]).
impl Handler<Login> for UsersActor {
    type Result = ResponseActFuture<Self, Result<String, UsersError>>;

    fn handle(&mut self, msg: Login, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        let (email, client) = (msg.email.clone(), msg.client);
        let admit = async move {
            let answer = shared.admit(&email, client).await;
            (answer, shared)
        };
        Box::pin(
            admit
                .into_actor(self)
                .then(move |(admitted, shared), act, _| {
                    let (attempt, shared_attempt) = match admitted {
                        Ok(Some(shared_attempt)) => (
                            act.throttle.track(&msg.email, msg.client),
                            Some(shared_attempt),
                        ),
                        // Redis did not answer: this process's own counts decide.
                        Ok(None) => {
                            match act.throttle.admit(&msg.email, msg.client, Instant::now()) {
                                Ok(attempt) => (attempt, None),
                                Err(wait) => return locked_out(act, wait, "process"),
                            }
                        }
                        Err(wait) => return locked_out(act, wait, "shared"),
                    };
                    let ctx = act.ctx();
                    let verify = async move {
                        let (user, version) = {
                            let mut conn = ctx.pool.get().await?;
                            let user = store::find_by_email(&mut conn, &msg.email).await?;
                            let version = match &user {
                                Some(user) => revocations::current_version(&mut conn, user.id)
                                    .await
                                    .map_err(DbError::from)?,
                                None => 0,
                            };
                            (user, version)
                        };
                        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
                        let ok = ctx.verify(msg.password, hash).await?;
                        match user {
                            Some(user) if ok => {
                                Ok(ctx.keys.issue(user.id, Role::from_db(&user.role), version))
                            }
                            _ => Err(UsersError::BadCredentials),
                        }
                    };
                    // The shared counts hear the outcome before the client does, so that the
                    // client's next attempt, on any instance, is judged with it.
                    let settled = async move {
                        let answer = verify.await;
                        if let Some(shared_attempt) = shared_attempt {
                            shared.settle(shared_attempt, decided(&answer)).await;
                        }
                        answer
                    };
                    settled
                        .into_actor(act)
                        .map(move |answer, act, _| {
                            match decided(&answer) {
                                Some(succeeded) => {
                                    act.throttle.finish(attempt, succeeded, Instant::now())
                                }
                                None => act.throttle.abandon(attempt),
                            }
                            answer
                        })
                        .boxed_local()
                }),
        )
    }
}

/// Refuses a login locked out by the `counts` (`shared` or `process`) for `wait`.
fn locked_out(
    act: &UsersActor,
    wait: std::time::Duration,
    counts: &'static str,
) -> actix::fut::LocalBoxActorFuture<UsersActor, Result<String, UsersError>> {
    warn!(act.logger, "login locked out after repeated failures"; "retry_after_s" => wait.as_secs(), "counts" => counts);
    actix::fut::ready(Err(UsersError::LockedOut { retry_after: wait })).boxed_local()
}

/// Whether a login attempt succeeded (`Some(true)`), failed on its credentials
/// (`Some(false)`), or was not decided (`None`: a database outage or a lockout is not the
/// client's failure).
fn decided(answer: &Result<String, UsersError>) -> Option<bool> {
    match answer {
        Ok(_) => Some(true),
        Err(UsersError::BadCredentials) => Some(false),
        Err(_) => None,
    }
}

/// Reads one user.
#[derive(Debug, Message)]
#[rtype(result = "Result<UserView, UsersError>")]
pub struct GetUser {
    pub id: Uuid,
}

/// Answers the user or [`UsersError::UserNotFound`].
impl Handler<GetUser> for UsersActor {
    type Result = ResponseFuture<Result<UserView, UsersError>>;

    fn handle(&mut self, msg: GetUser, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            store::find(&mut conn, msg.id, false)
                .await?
                .map(UserView::from)
                .ok_or_else(|| UsersError::UserNotFound)
        })
    }
}

/// Changes any of name, email and password (already validated).
#[derive(Debug, Message)]
#[rtype(result = "Result<Updated, UsersError>")]
pub struct UpdateUser {
    pub id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub password: Option<Secret>,
    /// The admin making the change, when it is not the user's own (logged: an admin may
    /// change another user's email or password without knowing the current one).
    pub by_admin: Option<Uuid>,
}

/// What an update changed: the profile, and the user's new token version when the password
/// changed (every token issued before is refused from now on).
#[derive(Debug, Clone)]
pub struct Updated {
    pub user: UserView,
    pub token_version: Option<i32>,
}

/// Updates the row and emits `user.updated` naming the changed fields; no change, no event. A
/// new password also raises the user's token version, in the same transaction.
impl Handler<UpdateUser> for UsersActor {
    type Result = ResponseFuture<Result<Updated, UsersError>>;

    fn handle(&mut self, msg: UpdateUser, _: &mut Self::Context) -> Self::Result {
        let ctx = self.ctx();
        Box::pin(async move {
            let password_hash = match msg.password {
                Some(p) => Some(ctx.hash(p).await?),
                None => None,
            };
            let (name, email, id, by_admin) = (msg.name, msg.email, msg.id, msg.by_admin);
            let (row, changed, version) = ctx
                .pool
                .get()
                .await?
                .transaction(async move |conn| -> Result<_, UsersError> {
                    let current = store::find(conn, id, true)
                        .await?
                        .ok_or_else(|| UsersError::UserNotFound)?;
                    let mut changes = UserChanges::default();
                    let mut changed = Vec::new();
                    if let Some(name) = name.filter(|n| *n != current.name) {
                        changes.name = Some(name);
                        changed.push("name".to_string());
                    }
                    if let Some(email) = email.filter(|e| *e != current.email) {
                        changes.email = Some(email);
                        changed.push("email".to_string());
                    }
                    if let Some(hash) = password_hash {
                        changes.password_hash = Some(hash);
                        changed.push("password".to_string());
                    }
                    if changed.is_empty() {
                        return Ok((current, changed, None));
                    }
                    let now = Utc::now();
                    changes.updated_at = Some(now);
                    let row = store::update(conn, id, &changes)
                        .await
                        .map_err(email_taken)?;
                    let version = match changes.password_hash {
                        Some(_) => {
                            Some(revocations::revoke(conn, id).await.map_err(DbError::from)?)
                        }
                        None => None,
                    };
                    let event = Event::UserUpdated(UserUpdated {
                        user_id: row.id,
                        name: row.name.clone(),
                        changed: changed.clone(),
                    });
                    outbox::enqueue(conn, [&Envelope::at(event, now)]).await?;
                    Ok((row, changed, version))
                })
                .await?;
            if !changed.is_empty() {
                ctx.wake_relay();
                info!(ctx.logger, "user updated"; "user_id" => %row.id, "changed" => changed.join(","));
            }
            let credentials = changed.iter().any(|c| c == "email" || c == "password");
            if let (Some(admin), true) = (by_admin, credentials) {
                warn!(ctx.logger, "admin changed another user's credentials"; "admin_id" => %admin, "user_id" => %id, "changed" => changed.join(","));
            }
            if let Some(version) = version {
                // This runtime refuses the old tokens at once; the others when the
                // announcement reaches them.
                ctx.keys.revocations().record(id, version, Utc::now());
                info!(ctx.logger, "tokens revoked"; "user_id" => %id, "reason" => "password changed", "token_version" => version);
            }
            Ok(Updated {
                user: UserView::from(row),
                token_version: version,
            })
        })
    }
}

/// Refuses every token `id` holds: raises the user's token version. Answers the new version,
/// or [`UsersError::UserNotFound`].
#[derive(Debug, Message)]
#[rtype(result = "Result<i32, UsersError>")]
pub struct LogoutEverywhere {
    pub id: Uuid,
}

impl Handler<LogoutEverywhere> for UsersActor {
    type Result = ResponseFuture<Result<i32, UsersError>>;

    fn handle(&mut self, msg: LogoutEverywhere, _: &mut Self::Context) -> Self::Result {
        let ctx = self.ctx();
        let id = msg.id;
        Box::pin(async move {
            let version = ctx
                .pool
                .get()
                .await?
                .transaction(async move |conn| -> Result<_, UsersError> {
                    store::find(conn, id, true)
                        .await?
                        .ok_or(UsersError::UserNotFound)?;
                    Ok(revocations::revoke(conn, id).await.map_err(DbError::from)?)
                })
                .await?;
            ctx.keys.revocations().record(id, version, Utc::now());
            info!(ctx.logger, "tokens revoked"; "user_id" => %id, "reason" => "logout everywhere", "token_version" => version);
            Ok(version)
        })
    }
}

/// The `user_activity` row of an action and its `user.activity` event (the row's id is the
/// event's), at `occurred_at`, or now.
fn activity(
    user_id: Uuid,
    product_id: Uuid,
    action: Action,
    quantity: u32,
    occurred_at: Option<DateTime<Utc>>,
) -> (ActivityRow, Envelope) {
    let event = Event::UserActivity(UserActivity {
        user_id,
        product_id,
        action,
        quantity,
    });
    let envelope = match occurred_at {
        Some(at) => Envelope::at(event, at),
        None => Envelope::new(event),
    };
    let row = ActivityRow {
        id: envelope.event_id,
        user_id,
        product_id,
        action: action.as_str().to_string(),
        quantity: quantity as i32,
        occurred_at: envelope.occurred_at,
    };
    (row, envelope)
}

/// Records one action of a user on a product (already validated: quantity 1..=1000).
#[derive(Debug, Message)]
#[rtype(result = "Result<Answer<Uuid>, UsersError>")]
pub struct RecordActivity {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub action: Action,
    pub quantity: u32,
    /// The request's `Idempotency-Key`, if it sent one.
    pub claim: Option<Claim>,
}

/// An action waiting for its group commit.
pub struct Queued {
    row: ActivityRow,
    envelope: Envelope,
    claim: Option<Claim>,
}

/// Queues the action for the next group commit (see [`UsersActor::write_activity`]); answers
/// the event id once it is committed; [`UsersError::UserNotFound`] for an unknown user. A keyed
/// action is written in the same statement as the others, with its key.
impl Handler<RecordActivity> for UsersActor {
    type Result = ResponseFuture<Result<Answer<Uuid>, UsersError>>;

    fn handle(&mut self, msg: RecordActivity, ctx: &mut Self::Context) -> Self::Result {
        let (row, envelope) = activity(msg.user_id, msg.product_id, msg.action, msg.quantity, None);
        let answer = self.activity.push(Queued {
            row,
            envelope,
            claim: msg.claim,
        });
        self.write_activity(ctx);
        Box::pin(async move { answer.await.unwrap_or_else(|_| Err(UsersError::Restarting)) })
    }
}

impl UsersActor {
    /// Starts writing queued actions while a writer slot is free: each batch is one statement
    /// (rows and outbox events together), and when one finishes the next takes everything
    /// that queued meanwhile.
    fn write_activity(&mut self, ctx: &mut Context<Self>) {
        while let Some(batch) = self.activity.next_batch() {
            let writer = self.ctx();
            let write = async move {
                let outcomes = writer.record_activities(batch.items()).await;
                batch.answer(outcomes);
                writer.wake_relay();
            };
            ctx.spawn(write.into_actor(self).map(|(), actor, ctx| {
                actor.activity.finished();
                actor.write_activity(ctx);
            }));
        }
    }
}

impl Ctx {
    /// Writes a batch of actions; one outcome per action. If a user disappears mid-statement
    /// (the whole statement fails), each action is written on its own. A keyed action the
    /// statement did not write is answered from its key's record: the first answer again, or
    /// [`IdempotencyError::Mismatch`]; without a record, its key is held by a request still
    /// running ([`IdempotencyError::InFlight`]) or its user does not exist.
    async fn record_activities(&self, actions: &[Queued]) -> Vec<Result<Answer<Uuid>, UsersError>> {
        let mut outcomes = match self.record_batch(actions).await {
            Err(UsersError::UserNotFound) if actions.len() > 1 => {
                let mut outcomes = Vec::with_capacity(actions.len());
                for action in actions.chunks(1) {
                    outcomes.extend(answers(action, self.record_batch(action).await));
                }
                outcomes
            }
            result => answers(actions, result),
        };
        let unwritten: Vec<usize> = (0..actions.len())
            .filter(|&i| {
                actions[i].claim.is_some() && matches!(outcomes[i], Err(UsersError::UserNotFound))
            })
            .collect();
        if unwritten.is_empty() {
            return outcomes;
        }
        let keyed: Vec<(Uuid, &Claim)> = unwritten
            .iter()
            .filter_map(|&i| Some((actions[i].row.user_id, actions[i].claim.as_ref()?)))
            .collect();
        let found = match self.pool.get().await {
            Ok(mut conn) => store::keyed_lookup(&mut conn, &keyed)
                .await
                .map_err(UsersError::from),
            Err(e) => Err(e.into()),
        };
        for (n, &i) in unwritten.iter().enumerate() {
            outcomes[i] = match &found {
                Err(e) => Err(e.clone()),
                Ok(found) => {
                    let (user_exists, recorded) = &found[n];
                    match idempotency::judge::<Uuid>(keyed[n].1, recorded.clone()) {
                        Ok(Some(id)) => Ok(Answer {
                            value: id,
                            replayed: true,
                        }),
                        Ok(None) if *user_exists => Err(IdempotencyError::InFlight.into()),
                        Ok(None) => Err(UsersError::UserNotFound),
                        Err(e) => Err(e.into()),
                    }
                }
            };
        }
        outcomes
    }

    /// One statement for `actions`, their events and their keys; a foreign-key violation is
    /// [`UsersError::UserNotFound`].
    async fn record_batch(&self, actions: &[Queued]) -> Result<HashSet<Uuid>, UsersError> {
        let rows: Vec<&ActivityRow> = actions.iter().map(|a| &a.row).collect();
        let claims: Vec<Option<&Claim>> = actions.iter().map(|a| a.claim.as_ref()).collect();
        let events = outbox::Events::of(actions.iter().map(|a| &a.envelope));
        let mut conn = self.pool.get().await?;
        store::record_activities(&mut conn, &rows, &claims, events)
            .await
            .map_err(user_not_found)
    }
}

/// A foreign-key violation of an activity write: its user was removed meanwhile.
fn user_not_found(e: diesel::result::Error) -> UsersError {
    if db::is_foreign_key_violation(&e) {
        UsersError::UserNotFound
    } else {
        e.into()
    }
}

/// One action of a batch sent by a storefront back end (already validated).
#[derive(Debug, Clone)]
pub struct BatchAction {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub action: Action,
    /// 1..=1000.
    pub quantity: u32,
    /// When the user did it (a backfilled action counts at that time).
    pub occurred_at: DateTime<Utc>,
}

/// Records a batch of actions all or nothing (`POST /activity/batch`).
#[derive(Debug, Message)]
#[rtype(result = "Result<Answer<Vec<Uuid>>, UsersError>")]
pub struct RecordBatch {
    pub actions: Vec<BatchAction>,
    /// The request's `Idempotency-Key`, if it sent one.
    pub claim: Option<Claim>,
}

/// Writes every action and its event in one transaction, in the given order, and answers their
/// event ids; [`UsersError::UnknownUsers`] (and nothing written) when any names a user that does
/// not exist. A keyed batch already written answers the same ids again and writes nothing.
impl Handler<RecordBatch> for UsersActor {
    type Result = ResponseFuture<Result<Answer<Vec<Uuid>>, UsersError>>;

    fn handle(&mut self, msg: RecordBatch, _: &mut Self::Context) -> Self::Result {
        let ctx = self.ctx();
        Box::pin(async move {
            let actions: Vec<(ActivityRow, Envelope)> = msg
                .actions
                .iter()
                .map(|a| {
                    activity(
                        a.user_id,
                        a.product_id,
                        a.action,
                        a.quantity,
                        Some(a.occurred_at),
                    )
                })
                .collect();
            let rows: Vec<&ActivityRow> = actions.iter().map(|(row, _)| row).collect();
            let claim = msg.claim.as_ref();
            let mut conn = ctx.pool.get().await?;
            let answer = conn
                .transaction(async |conn| -> Result<_, UsersError> {
                    if let Some(ids) = idempotency::replay(conn, claim).await? {
                        return Ok(Answer {
                            value: ids,
                            replayed: true,
                        });
                    }
                    let events = outbox::Events::of(actions.iter().map(|(_, envelope)| envelope));
                    let written = store::record_activities(conn, &rows, &[], events)
                        .await
                        .map_err(|e| {
                            if db::is_foreign_key_violation(&e) {
                                UsersError::UnknownUsers(Vec::new())
                            } else {
                                e.into()
                            }
                        })?;
                    let unknown: Vec<usize> = rows
                        .iter()
                        .enumerate()
                        .filter(|(_, row)| !written.contains(&row.id))
                        .map(|(i, _)| i)
                        .collect();
                    if !unknown.is_empty() {
                        // Rolls the transaction back: all or nothing.
                        return Err(UsersError::UnknownUsers(unknown));
                    }
                    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
                    idempotency::record(conn, claim, &ids).await?;
                    Ok(Answer::fresh(ids))
                })
                .await?;
            if !answer.replayed {
                ctx.wake_relay();
                info!(ctx.logger, "activity batch recorded"; "actions" => rows.len());
            }
            Ok(answer)
        })
    }
}

/// One outcome per action of a written batch: its event id if the statement wrote it,
/// [`UsersError::UserNotFound`] if not (its user does not exist, or for a keyed action, see
/// [`Ctx::record_activities`]), or the batch's failure.
fn answers(
    actions: &[Queued],
    written: Result<HashSet<Uuid>, UsersError>,
) -> Vec<Result<Answer<Uuid>, UsersError>> {
    actions
        .iter()
        .map(|Queued { row, .. }| match &written {
            Ok(ids) if ids.contains(&row.id) => Ok(Answer::fresh(row.id)),
            Ok(_) => Err(UsersError::UserNotFound),
            Err(e) => Err(e.clone()),
        })
        .collect()
}

/// Makes sure an admin account with this email and password exists (startup, `ADMIN_EMAIL`).
#[derive(Debug, Message)]
#[rtype(result = "Result<Uuid, UsersError>")]
pub struct EnsureAdmin {
    pub email: String,
    pub password: Secret,
}

/// Creates the admin (`user.registered`) or promotes / re-keys the existing account
/// (`user.updated`); nothing when it is already right.
impl Handler<EnsureAdmin> for UsersActor {
    type Result = ResponseFuture<Result<Uuid, UsersError>>;

    fn handle(&mut self, msg: EnsureAdmin, _: &mut Self::Context) -> Self::Result {
        let ctx = self.ctx();
        Box::pin(async move {
            let existing = {
                let mut conn = ctx.pool.get().await?;
                store::find_by_email(&mut conn, &msg.email).await?
            };
            let Some(existing) = existing else {
                let hash = ctx.hash(msg.password).await?;
                let name = msg.email.split('@').next().unwrap_or("admin").to_string();
                let row = new_user(name, msg.email, Some(hash), Role::Admin);
                let inserted = row.clone();
                ctx.pool
                    .get()
                    .await?
                    .transaction(async move |conn| -> Result<_, UsersError> {
                        store::insert(conn, &inserted).await.map_err(email_taken)?;
                        let event = Event::UserRegistered(UserRegistered {
                            user_id: inserted.id,
                            name: inserted.name.clone(),
                        });
                        outbox::enqueue(conn, [&Envelope::at(event, inserted.created_at)]).await?;
                        Ok(())
                    })
                    .await?;
                ctx.wake_relay();
                info!(ctx.logger, "admin account created"; "user_id" => %row.id);
                return Ok(row.id);
            };
            let password_ok = ctx
                .verify(msg.password.clone(), existing.password_hash.clone())
                .await?;
            let is_admin = existing.role == Role::Admin.as_str();
            if password_ok && is_admin {
                return Ok(existing.id);
            }
            let mut changes = UserChanges::default();
            let mut changed = Vec::new();
            if !password_ok {
                changes.password_hash = Some(ctx.hash(msg.password).await?);
                changed.push("password".to_string());
            }
            if !is_admin {
                changes.role = Some(Role::Admin.as_str().to_string());
                changed.push("role".to_string());
            }
            let now = Utc::now();
            changes.updated_at = Some(now);
            let id = existing.id;
            ctx.pool
                .get()
                .await?
                .transaction(async move |conn| -> Result<_, UsersError> {
                    let row = store::update(conn, id, &changes).await?;
                    let event = Event::UserUpdated(UserUpdated {
                        user_id: row.id,
                        name: row.name,
                        changed,
                    });
                    outbox::enqueue(conn, [&Envelope::at(event, now)]).await?;
                    Ok(())
                })
                .await?;
            ctx.wake_relay();
            info!(ctx.logger, "admin account updated"; "user_id" => %id);
            Ok(id)
        })
    }
}

recsys_actors::observed_handlers!(UsersActor => RecordBatch, RegisterUser, Login, GetUser, UpdateUser, LogoutEverywhere, RecordActivity, EnsureAdmin);
recsys_actors::restart_on_fail!(UsersActor);
