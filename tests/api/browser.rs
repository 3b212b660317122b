//! CORS in a real browser: headless Chromium opens a storefront page the test serves itself (on
//! its own origin, `http://127.0.0.1:<port>`), whose script calls recsys the way a shop's page
//! does: a personalised ranking with the user's token in `Authorization`, and a login with a JSON
//! body. Both make the browser send a preflight first. With the page's origin in `CORS_ORIGINS`
//! the preflight is answered and the page reads the answers (a 401 included); with another
//! origin allowed the browser withholds them from the page, although recsys answered.
//!
//! Needs Chromium (`CHROMIUM_BIN`, or `chromium` on `PATH`); `scripts/test.sh` installs it.

use std::process::Stdio;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use recsys::config::Service;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;

/// The storefront page. Its query names the recsys ports, the user, their token and email; its
/// script makes two calls that need a preflight and writes what it could read of each answer
/// into `<pre id=out>` as JSON: `ok` with the status, the `X-Cache` header and the body, or
/// `blocked` with the error the browser gave the page instead.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>storefront</title></head>
<body>
<pre id=out>pending</pre>
<script>
const q = new URLSearchParams(location.search);
async function call(name, url, init) {
  try {
    const r = await fetch(url, init);
    const body = await r.text();
    return {name, outcome: 'ok', status: r.status, x_cache: r.headers.get('x-cache'), body};
  } catch (e) {
    return {name, outcome: 'blocked', error: String(e)};
  }
}
(async () => {
  const results = [
    await call('recommendations',
      q.get('recommendations') + '/recommendations/users/' + q.get('user'),
      {headers: {Authorization: 'Bearer ' + q.get('token')}}),
    await call('login', q.get('users') + '/users/login', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({email: q.get('email'), password: 'not-the-password'}),
    }),
  ];
  document.getElementById('out').textContent = JSON.stringify(results);
})();
</script>
</body>
</html>
"#;

/// The two routes the page calls, as recsys labels them (route templates).
const RANKING: &str = "/recommendations/users/{user_id}";
const LOGIN: &str = "/users/login";

/// The test's own web server, serving [`PAGE`] at `/` on an OS-picked loopback port.
struct Storefront {
    origin: String,
    handle: ServerHandle,
}

impl Storefront {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let server = HttpServer::new(|| {
            App::new().route(
                "/",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .body(PAGE)
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { origin, handle }
    }

    /// The page, set up to call `app` as a fresh user of it.
    async fn page_for(&self, app: &TestApp) -> String {
        let (user, token, email) = app.new_user().await;
        format!(
            "{}/?recommendations={}&users={}&user={user}&token={}&email={}",
            self.origin,
            urlencode(&app.url(Service::Recommendations)),
            urlencode(&app.url(Service::Users)),
            urlencode(&token),
            urlencode(&email),
        )
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// What the page read of each call, by name: opens `url` in headless Chromium (a fresh profile,
/// so no preflight is cached) and reads the JSON the script wrote into the DOM Chromium dumps.
/// The virtual time budget does not run out while fetches are pending, so the DOM is dumped
/// once both calls are done.
async fn open_in_chromium(url: &str) -> Vec<(String, Value)> {
    let bin = tool("CHROMIUM_BIN", "chromium");
    let profile = std::env::temp_dir().join(format!("recsys-chromium-{}", Uuid::new_v4().simple()));
    let child = tokio::process::Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "Chromium ({bin}) does not start: {e}. The browser test needs it \
                 (CHROMIUM_BIN, or chromium on PATH); scripts/test.sh installs it"
            )
        });
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await;
    let _ = std::fs::remove_dir_all(&profile);
    let output = output
        .expect("Chromium dumps the page within 60 s")
        .expect("Chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Chromium failed ({}): {stderr}",
        output.status
    );
    let out = dom
        .split_once("<pre id=\"out\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(text, _)| unescape(text))
        .unwrap_or_else(|| panic!("no <pre id=out> in the DOM Chromium dumped:\n{dom}\n{stderr}"));
    let results: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|_| {
        panic!("the page did not finish its calls before Chromium dumped it; it shows {out:?}")
    });
    eprintln!("the page read: {out}");
    results
        .into_iter()
        .map(|result| (result["name"].as_str().unwrap().to_string(), result))
        .collect()
}

/// The text of an HTML text node as Chromium serialises it.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The page's result of the call `name`.
fn result<'a>(results: &'a [(String, Value)], name: &str) -> &'a Value {
    &results
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no result for {name}: {results:?}"))
        .1
}

/// `http_requests_total` of `service` for `method` on `route` answered with `status`. The
/// registry is the process's: the runtime's own requests are told apart by the access log.
async fn requests_total(
    app: &TestApp,
    service: Service,
    method: &str,
    route: &str,
    status: u16,
) -> u64 {
    let labels = [
        format!("service=\"{}\"", service.name()),
        format!("method=\"{method}\""),
        format!("route=\"{route}\""),
        format!("status=\"{status}\""),
    ];
    app.get(Service::Users, "/metrics", None)
        .await
        .text
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Requests this runtime answered (its access log) with `method` on `route` and `status`.
fn logged(lines: &Captured, method: &str, route: &str, status: u16) -> usize {
    let wanted = [
        format!("method={method}"),
        format!("route={route}"),
        format!("status={status}"),
    ];
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            wanted.iter().all(|w| fields.contains(&w.as_str()))
        })
        .count()
}

/// A page of an allowed origin: Chromium sends a preflight for each call (answered 204), then
/// the request; the page reads the ranking with its `X-Cache` header and the login's 401 with
/// its JSON error.
#[actix_web::test]
async fn a_page_of_an_allowed_origin_reads_the_answers_after_a_real_preflight() {
    let shop = Storefront::start();
    let (logger, log) = captured_logger();
    let origin = shop.origin.clone();
    let app = TestApp::builder()
        .logger(logger)
        .with(|settings| settings.cors_origins = vec![origin])
        .spawn()
        .await;
    let page = shop.page_for(&app).await;
    let before = [
        requests_total(&app, Service::Recommendations, "OPTIONS", RANKING, 204).await,
        requests_total(&app, Service::Users, "OPTIONS", LOGIN, 204).await,
    ];

    let results = open_in_chromium(&page).await;

    let ranking = result(&results, "recommendations");
    assert_eq!(ranking["outcome"], "ok", "{ranking}");
    assert_eq!(ranking["status"], 200, "{ranking}");
    assert_eq!(ranking["x_cache"], "miss", "exposed header: {ranking}");
    let body: Value = serde_json::from_str(ranking["body"].as_str().unwrap()).unwrap();
    assert!(body.is_array(), "{ranking}");
    let login = result(&results, "login");
    assert_eq!(login["outcome"], "ok", "{login}");
    assert_eq!(login["status"], 401, "{login}");
    let body: Value = serde_json::from_str(login["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{login}");

    // The browser asked first: one preflight per call, answered 204, then the call itself.
    let after = [
        requests_total(&app, Service::Recommendations, "OPTIONS", RANKING, 204).await,
        requests_total(&app, Service::Users, "OPTIONS", LOGIN, 204).await,
    ];
    eprintln!("http_requests_total{{method=\"OPTIONS\",status=\"204\"}} of {RANKING}, {LOGIN}: before {before:?}, after {after:?}");
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "no preflight counted: before {before:?}, after {after:?}"
    );
    assert_eq!(logged(&log, "OPTIONS", RANKING, 204), 1);
    assert_eq!(logged(&log, "GET", RANKING, 200), 1);
    assert_eq!(logged(&log, "OPTIONS", LOGIN, 204), 1);
    assert_eq!(logged(&log, "POST", LOGIN, 401), 1);
    shop.stop().await;
}

/// A page of an origin not allowed (the same page on the same port, but another origin is in
/// `CORS_ORIGINS`): recsys answers the preflights without CORS headers, so Chromium never sends
/// the calls and the page only learns that they failed.
#[actix_web::test]
async fn a_page_of_another_origin_is_refused_by_the_browser() {
    let shop = Storefront::start();
    let (logger, log) = captured_logger();
    // The page's host by name: the same server, another origin.
    let other = shop.origin.replace("127.0.0.1", "localhost");
    let app = TestApp::builder()
        .logger(logger)
        .with(|settings| settings.cors_origins = vec![other])
        .spawn()
        .await;
    let page = shop.page_for(&app).await;
    // A method the route does not serve is counted under `OTHER` (the log keeps `OPTIONS`).
    let before = requests_total(&app, Service::Recommendations, "OTHER", RANKING, 405).await;

    let results = open_in_chromium(&page).await;

    for name in ["recommendations", "login"] {
        let seen = result(&results, name);
        assert_eq!(seen["outcome"], "blocked", "{seen}");
        assert!(
            seen["error"].as_str().unwrap().contains("Failed to fetch"),
            "{seen}"
        );
    }
    // recsys answered the preflights (an ordinary OPTIONS: 405, no CORS header); the browser
    // then withheld the calls themselves.
    let after = requests_total(&app, Service::Recommendations, "OTHER", RANKING, 405).await;
    eprintln!("http_requests_total{{method=\"OTHER\",status=\"405\"}} of {RANKING}: before {before}, after {after}");
    assert!(after > before, "no preflight counted: {before} -> {after}");
    assert_eq!(logged(&log, "OPTIONS", RANKING, 405), 1);
    assert_eq!(logged(&log, "OPTIONS", LOGIN, 405), 1);
    assert_eq!(logged(&log, "GET", RANKING, 200), 0);
    assert_eq!(logged(&log, "POST", LOGIN, 401), 0);
    shop.stop().await;
}
