//! The observation machinery on a real actix runtime: mailbox depth rises under a flood of slow
//! messages and falls back to zero, every message is counted with its outcome and handling time,
//! and the supervisor counts restarts. Each test runs in its own process (nextest), and labels
//! its actor with its own `service`, so the counters it reads are its own.

use std::time::{Duration, Instant};

use actix::prelude::*;
use recsys_actors::metrics::{
    ACTOR_MAILBOX_DEPTH, ACTOR_MESSAGES, ACTOR_MESSAGE_DURATION, ACTOR_RESTARTS,
};
use recsys_actors::observe::{short_type_name, Refused, DEFAULT_MAILBOX_LIMIT};
use recsys_actors::supervision::{start_supervised, Fail, Panic};
use slog::{o, Logger};

/// An actor whose work takes time.
struct Worker;

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Supervised for Worker {}

/// Handled one at a time: holds the actor for its duration.
#[derive(Message)]
#[rtype(result = "Result<u32, String>")]
struct Work {
    took: Duration,
    answer: Result<u32, String>,
}

impl Handler<Work> for Worker {
    type Result = AtomicResponse<Self, Result<u32, String>>;

    fn handle(&mut self, msg: Work, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(Box::pin(
            actix::clock::sleep(msg.took)
                .into_actor(self)
                .map(move |_, _, _| msg.answer),
        ))
    }
}

/// Runs in the actor's context without holding it: cancelled if the actor restarts.
#[derive(Message)]
#[rtype(result = "()")]
struct Background(Duration);

impl Handler<Background> for Worker {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Background, _: &mut Self::Context) -> Self::Result {
        Box::pin(actix::clock::sleep(msg.0).into_actor(self))
    }
}

impl Handler<Fail> for Worker {
    type Result = ();

    fn handle(&mut self, _: Fail, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Panic> for Worker {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Panic, _: &mut Self::Context) -> Self::Result {
        match msg {
            Panic::InHandler => panic!("worker panics in its handler"),
            Panic::InAnswer => Box::pin(async { panic!("worker panics in its answer") }),
        }
    }
}

/// Panics in one of the actor's own futures, after the handler has answered.
#[derive(Message)]
#[rtype(result = "()")]
struct PanicInContext;

impl Handler<PanicInContext> for Worker {
    type Result = ();

    fn handle(&mut self, _: PanicInContext, ctx: &mut Self::Context) {
        ctx.spawn(
            actix::clock::sleep(Duration::from_millis(1))
                .into_actor(self)
                .map(|_, _, _| panic!("worker panics in its own future")),
        );
    }
}

recsys_actors::observed_handlers!(Worker => Work, Background, Fail, Panic, PanicInContext);

fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

const ACTOR: &str = "Worker";

fn depth(service: &str) -> i64 {
    ACTOR_MAILBOX_DEPTH
        .with_label_values(&[service, ACTOR])
        .get()
}

fn messages(service: &str, message: &str, outcome: &str) -> u64 {
    ACTOR_MESSAGES
        .with_label_values(&[service, ACTOR, message, outcome])
        .get()
}

/// Polls `condition` every 5 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        actix::clock::sleep(Duration::from_millis(5)).await;
    }
    condition()
}

#[actix_rt::test]
async fn labels_are_type_names_without_path_or_generics() {
    assert_eq!(short_type_name::<Worker>(), "Worker");
    assert_eq!(short_type_name::<Vec<Option<u8>>>(), "Vec");
    assert_eq!(
        short_type_name::<recsys_actors::kafka_consumer::ApplyBatch<String>>(),
        "ApplyBatch"
    );
}

#[actix_rt::test]
async fn mailbox_depth_rises_under_a_flood_and_falls_back_to_zero() {
    const SERVICE: &str = "flood";
    const FLOOD: usize = 40;
    let arbiter = Arbiter::new();
    let worker = start_supervised(
        &arbiter.handle(),
        SERVICE,
        DEFAULT_MAILBOX_LIMIT,
        &discard(),
        Worker,
    );
    assert_eq!(depth(SERVICE), 0, "the series exists from the start");

    let answers: Vec<_> = (0..FLOOD)
        .map(|i| {
            let worker = worker.clone();
            actix::spawn(async move {
                worker
                    .send(Work {
                        took: Duration::from_millis(10),
                        answer: if i % 4 == 0 {
                            Err("refused".into())
                        } else {
                            Ok(i as u32)
                        },
                    })
                    .await
            })
        })
        .collect();

    let mut peak = 0;
    assert!(
        eventually(Duration::from_secs(5), || {
            peak = peak.max(depth(SERVICE));
            peak >= FLOOD as i64 / 2
        })
        .await,
        "depth never rose past half the flood (peak {peak})"
    );
    for answer in answers {
        answer.await.unwrap().unwrap().ok();
    }
    assert!(
        eventually(Duration::from_secs(5), || depth(SERVICE) == 0).await,
        "depth stayed at {}",
        depth(SERVICE)
    );
    assert_eq!(messages(SERVICE, "Work", "ok"), 30);
    assert_eq!(messages(SERVICE, "Work", "error"), 10);
    let timing = ACTOR_MESSAGE_DURATION.with_label_values(&[SERVICE, ACTOR, "Work"]);
    assert_eq!(timing.get_sample_count(), FLOOD as u64);
    assert!(
        timing.get_sample_sum() >= FLOOD as f64 * 0.010,
        "each Work holds the actor for 10 ms: {} s in all",
        timing.get_sample_sum()
    );
    arbiter.stop();
}

#[actix_rt::test]
async fn a_restart_is_counted_and_the_message_it_cut_short_is_dropped() {
    const SERVICE: &str = "restart";
    let arbiter = Arbiter::new();
    let worker = start_supervised(
        &arbiter.handle(),
        SERVICE,
        DEFAULT_MAILBOX_LIMIT,
        &discard(),
        Worker,
    );
    let restarts = ACTOR_RESTARTS.with_label_values(&[SERVICE, ACTOR]);
    assert_eq!(restarts.get(), 0, "the series exists from the start");

    let cut_short = worker.send(Background(Duration::from_secs(30)));
    let cut_short = actix::spawn(cut_short);
    assert!(eventually(Duration::from_secs(5), || depth(SERVICE) == 1).await);
    worker.send(Fail).await.unwrap();

    assert!(
        cut_short.await.unwrap().is_err(),
        "its sender hears it was lost"
    );
    assert!(eventually(Duration::from_secs(5), || restarts.get() == 1).await);
    assert_eq!(messages(SERVICE, "Background", "dropped"), 1);
    assert_eq!(messages(SERVICE, "Fail", "ok"), 1);

    // Restarted, it serves again; a second kill counts again.
    let answer = worker
        .send(Work {
            took: Duration::ZERO,
            answer: Ok(7),
        })
        .await
        .unwrap();
    assert_eq!(answer, Ok(7));
    worker.send(Fail).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || restarts.get() == 2).await);
    assert!(eventually(Duration::from_secs(5), || depth(SERVICE) == 0).await);
    arbiter.stop();
}

#[actix_rt::test]
async fn a_message_to_a_stopped_actor_is_dropped_not_leaked() {
    const SERVICE: &str = "stopped";
    let arbiter = Arbiter::new();
    let worker = start_supervised(
        &arbiter.handle(),
        SERVICE,
        DEFAULT_MAILBOX_LIMIT,
        &discard(),
        Worker,
    );
    arbiter.stop();
    arbiter.join().unwrap();

    let answer = worker
        .send(Work {
            took: Duration::ZERO,
            answer: Ok(1),
        })
        .await;

    assert!(answer.is_err());
    assert_eq!(depth(SERVICE), 0);
    assert_eq!(messages(SERVICE, "Work", "dropped"), 1);
}

#[actix_rt::test]
async fn beyond_its_limit_an_actor_sheds_messages_at_once() {
    const SERVICE: &str = "shed";
    const LIMIT: usize = 4;
    let arbiter = Arbiter::new();
    let worker = start_supervised(&arbiter.handle(), SERVICE, LIMIT, &discard(), Worker);

    let sends: Vec<_> = (0..20)
        .map(|_| {
            worker.send(Work {
                took: Duration::from_millis(20),
                answer: Ok(1),
            })
        })
        .collect();
    let answers = futures_util::future::join_all(sends).await;

    let served = answers.iter().filter(|a| matches!(a, Ok(Ok(1)))).count();
    let shed = answers
        .iter()
        .filter(|a| matches!(a, Err(Refused::Overloaded)))
        .count();
    assert_eq!((served, shed), (LIMIT, 20 - LIMIT));
    assert_eq!(messages(SERVICE, "Work", "shed"), (20 - LIMIT) as u64);
    assert_eq!(messages(SERVICE, "Work", "ok"), LIMIT as u64);
    assert!(eventually(Duration::from_secs(5), || depth(SERVICE) == 0).await);
    // Room again once the flood is answered.
    let answer = worker
        .send(Work {
            took: Duration::ZERO,
            answer: Ok(2),
        })
        .await;
    assert_eq!(answer, Ok(Ok(2)));
    arbiter.stop();
}

#[actix_rt::test]
async fn an_address_with_a_deadline_stops_waiting_for_a_slow_answer() {
    const SERVICE: &str = "deadline";
    let arbiter = Arbiter::new();
    let worker = start_supervised(
        &arbiter.handle(),
        SERVICE,
        DEFAULT_MAILBOX_LIMIT,
        &discard(),
        Worker,
    );
    let impatient = worker.with_timeout(Duration::from_millis(20));

    let answer = impatient
        .send(Work {
            took: Duration::from_millis(300),
            answer: Ok(3),
        })
        .await;

    assert_eq!(answer, Err(Refused::TimedOut));
    // The actor still finishes the work; it counts once it is done.
    assert!(
        eventually(Duration::from_secs(5), || messages(SERVICE, "Work", "ok")
            == 1)
        .await
    );
    assert_eq!(depth(SERVICE), 0);
    arbiter.stop();
}

/// A panic in a handler, in a handler's answer future or in one of the actor's own futures is
/// a restart: counted, its message counted, and the next message answered.
#[actix_rt::test]
async fn a_panic_anywhere_in_an_actor_is_a_restart() {
    const SERVICE: &str = "panics";
    let arbiter = Arbiter::new();
    let worker = start_supervised(
        &arbiter.handle(),
        SERVICE,
        DEFAULT_MAILBOX_LIMIT,
        &discard(),
        Worker,
    );
    let restarts = || ACTOR_RESTARTS.with_label_values(&[SERVICE, ACTOR]).get();
    let work = || Work {
        took: Duration::ZERO,
        answer: Ok(7),
    };

    assert_eq!(worker.send(Panic::InHandler).await, Err(Refused::Stopped));
    assert!(eventually(Duration::from_secs(2), || restarts() == 1).await);
    assert_eq!(worker.send(work()).await, Ok(Ok(7)));
    assert_eq!(messages(SERVICE, "Panic", "panicked"), 1);

    assert_eq!(worker.send(Panic::InAnswer).await, Err(Refused::Stopped));
    assert!(eventually(Duration::from_secs(2), || restarts() == 2).await);
    assert_eq!(worker.send(work()).await, Ok(Ok(7)));
    assert_eq!(messages(SERVICE, "Panic", "dropped"), 1);

    assert_eq!(worker.send(PanicInContext).await, Ok(()));
    assert!(eventually(Duration::from_secs(2), || restarts() == 3).await);
    assert_eq!(worker.send(work()).await, Ok(Ok(7)));
    assert_eq!(depth(SERVICE), 0);
}
