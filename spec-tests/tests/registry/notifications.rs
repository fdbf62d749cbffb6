//! Event notifications (`[[notifications]]`) delivered to a receiver on loopback: the HTTP
//! server here is the real peer a registry posts to (a CI hook, a scanner), written in the
//! test so it can record what arrives, stay down, or hang.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use spec_tests::api::{Api, TestImage};
use spec_tests::prometheus::Scrape;
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::{Ctr, Docker, run};
use spec_tests::wait::wait_until;

/// One POST the receiver got: its headers (names lowercased, repeated ones joined with `, `)
/// and its JSON body.
#[derive(Clone, Debug)]
struct Delivery {
    headers: BTreeMap<String, String>,
    envelope: Value,
}

/// How the receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// `200 OK` to every POST.
    Acknowledge,
    /// Never answers, holding each connection open until the client gives up on it (or, after
    /// [`Receiver::acknowledge_from_now`], answers the connections that come next).
    Hang,
}

/// An HTTP/1.1 receiver on `127.0.0.1`, one request per connection.
struct Receiver {
    addr: SocketAddr,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Whether new connections are held unanswered.
    hanging: Arc<AtomicBool>,
    /// The connections held unanswered, in the order they came: how long each was held
    /// before the client closed it, `None` while it is still open.
    held: Arc<Mutex<Vec<Option<Duration>>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on a new loopback port.
    fn start(behaviour: Behaviour) -> Receiver {
        Receiver::serve(
            TcpListener::bind("127.0.0.1:0").expect("bind the receiver"),
            behaviour,
        )
    }

    /// Listens on the port `socket` holds.
    fn start_on(socket: socket2::Socket, behaviour: Behaviour) -> Receiver {
        socket.listen(16).expect("listen");
        Receiver::serve(socket.into(), behaviour)
    }

    fn serve(listener: TcpListener, behaviour: Behaviour) -> Receiver {
        let addr = listener.local_addr().expect("receiver address");
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let hanging = Arc::new(AtomicBool::new(behaviour == Behaviour::Hang));
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (deliveries, hanging, held, stop) =
                (deliveries.clone(), hanging.clone(), held.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if hanging.load(Ordering::SeqCst) {
                        hold(stream, &held);
                    } else if let Some(delivery) = answer(stream) {
                        deliveries.lock().expect("deliveries").push(delivery);
                    }
                }
            })
        };
        Receiver {
            addr,
            deliveries,
            hanging,
            held,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Answers the connections that come from now on (those held stay unanswered).
    fn acknowledge_from_now(&self) {
        self.hanging.store(false, Ordering::SeqCst);
    }

    /// The connections held unanswered so far: how long each was held before the client
    /// closed it (`None`: still open).
    fn held(&self) -> Vec<Option<Duration>> {
        self.held.lock().expect("held").clone()
    }

    /// `http://127.0.0.1:<port>/events`.
    fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("deliveries").clone()
    }

    /// Every event received so far, in arrival order.
    fn events(&self) -> Vec<Value> {
        self.deliveries()
            .iter()
            .flat_map(|d| d.envelope["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until `count` events have arrived; returns them.
    fn wait_for_events(&self, count: usize) -> Vec<Value> {
        wait_until(
            &format!("{count} events at the receiver"),
            Duration::from_secs(30),
            || self.events().len() >= count,
        );
        self.events()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept so the thread sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Keeps `stream` open, unanswered, reading whatever comes until the client closes it, and
/// records in `held` how long that took.
fn hold(mut stream: TcpStream, held: &Arc<Mutex<Vec<Option<Duration>>>>) {
    let accepted = Instant::now();
    let index = {
        let mut held = held.lock().expect("held");
        held.push(None);
        held.len() - 1
    };
    let held = held.clone();
    std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).is_ok_and(|n| n > 0) {}
        held.lock().expect("held")[index] = Some(accepted.elapsed());
    });
}

/// Reads one request and answers `200 OK`.
fn answer(stream: TcpStream) -> Option<Delivery> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut headers = BTreeMap::<String, String>::new();
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers
            .entry(name.trim().to_ascii_lowercase())
            .and_modify(|v| *v = format!("{v}, {}", value.trim()))
            .or_insert_with(|| value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    assert!(request_line.starts_with("POST /events "), "{request_line}");
    Some(Delivery {
        headers,
        envelope: serde_json::from_slice(&body).expect("the body is JSON"),
    })
}

/// A registry posting to one `[[notifications]]` endpoint per `(name, receiver, settings)`,
/// `settings` being the table's other lines.
fn registry_notifying(endpoints: &[(&str, &Receiver, &str)]) -> RegistryProcess {
    let tables: String = endpoints
        .iter()
        .map(|(name, receiver, settings)| {
            format!(
                "[[notifications]]\nname = \"{name}\"\nurl = \"{}\"\n{settings}\n",
                receiver.url()
            )
        })
        .collect();
    RegistryProcess::start_with_config(&tables)
}

/// A loopback port held without listening: connections to it are refused, as by a receiver
/// that is down, and no other process can take it before the receiver comes up on it.
fn reserved_port() -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind");
    let addr = socket
        .local_addr()
        .expect("address")
        .as_socket()
        .expect("an IP address");
    (socket, addr)
}

/// What identifies an event: action, repository, digest, tag and media type.
fn summary(event: &Value) -> (String, String, String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let target = &event["target"];
    (
        text(&event["action"]),
        text(&target["repository"]),
        text(&target["digest"]),
        text(&target["tag"]),
        text(&target["mediaType"]),
    )
}

fn event(
    action: &str,
    repo: &str,
    digest: &str,
    tag: &str,
    media_type: &str,
) -> (String, String, String, String, String) {
    (
        action.to_owned(),
        repo.to_owned(),
        digest.to_owned(),
        tag.to_owned(),
        media_type.to_owned(),
    )
}

/// docker push, docker pull, containerd pull and a delete each reach the receiver as one envelope with the
/// right repository, digest and tag, in the order they happened; blob events are left out
/// with distribution's `ignoredmediatypes`, and the endpoint's headers arrive with each POST.
/// docker and containerd pull by `HEAD` by tag and then (unless they hold the image) `GET`
/// by digest: one pull event either way, with the tag.
#[test]
fn docker_push_and_pull_send_one_envelope_each() {
    let Some(docker) = Docker::get() else { return };
    let receiver = Receiver::start(Behaviour::Acknowledge);
    let registry = registry_notifying(&[(
        "hook",
        &receiver,
        r#"headers = { Authorization = "Bearer test-token", X-Team = ["a", "b"] }
        ignoredmediatypes = ["application/octet-stream"]"#,
    )]);
    let remote = format!("{}/notify/busybox:v1", registry.host());
    run(docker.cmd().args(["tag", &docker.busybox_image(), &remote]));
    // docker reports what it pushed: `v1: digest: sha256:… size: 527`.
    let pushed = run(docker.cmd().args(["push", &remote]));
    let words: Vec<&str> = pushed
        .lines()
        .find(|l| l.starts_with("v1: digest: "))
        .unwrap_or_else(|| panic!("no digest line in {pushed}"))
        .split_whitespace()
        .collect();
    let (digest, length) = (
        words[2].to_owned(),
        words[4].parse::<u64>().expect("manifest size"),
    );

    run(docker.cmd().args(["rmi", &remote]));
    run(docker.cmd().args(["pull", &remote]));
    run(docker.cmd().args(["rmi", &remote]));
    // containerd (the kubelet's puller) resolves the tag the same way.
    let Some(ctr) = Ctr::get() else { return };
    run(ctr.cmd().args(["images", "pull", "--plain-http", &remote]));
    run(ctr.cmd().args(["images", "rm", "--sync", &remote]));
    let api = Api::new(&registry);
    let deleted = api.delete(&format!("/v2/notify/busybox/manifests/{digest}"));
    assert_eq!(deleted.status(), 202);

    // Delivery is in order, so once the delete is in, everything before it is too.
    let events = receiver.wait_for_events(4);
    let manifest_type = "application/vnd.docker.distribution.manifest.v2+json";
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            event("push", "notify/busybox", &digest, "v1", manifest_type),
            event("pull", "notify/busybox", &digest, "v1", manifest_type),
            event("pull", "notify/busybox", &digest, "v1", manifest_type),
            event("delete", "notify/busybox", &digest, "", ""),
        ],
        "{events:#?}"
    );
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 4, "one envelope per event");
    let delivered = "rbuild_registry_notification_events_delivered_total{endpoint=\"hook\"}";
    wait_until("/metrics to count 4 deliveries", Duration::from_secs(10), || {
        Scrape::get(&registry.url("/metrics")).value(delivered) == 4.0
    });
    for delivery in &deliveries {
        assert_eq!(
            delivery.headers["content-type"],
            "application/vnd.docker.distribution.events.v1+json"
        );
        assert_eq!(delivery.headers["authorization"], "Bearer test-token");
        assert_eq!(delivery.headers["x-team"], "a, b");
        assert_eq!(delivery.envelope["events"].as_array().map(Vec::len), Some(1));
    }
    let (push, pull) = (&events[0], &events[1]);
    for (event, method) in [(push, "PUT"), (pull, "HEAD")] {
        assert_eq!(event["target"]["size"], length);
        assert_eq!(event["target"]["length"], length);
        assert_eq!(
            event["target"]["url"],
            format!("http://{}/v2/notify/busybox/manifests/{digest}", registry.host())
        );
        assert_eq!(event["request"]["method"], method);
        assert_eq!(event["request"]["host"], registry.host());
        assert!(
            event["request"]["useragent"]
                .as_str()
                .is_some_and(|ua| ua.contains("docker")),
            "{event}"
        );
        assert!(
            event["request"]["addr"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))
        );
        assert!(event["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    assert!(
        events[2]["request"]["useragent"]
            .as_str()
            .is_some_and(|ua| ua.contains("containerd")),
        "{events:#?}"
    );
    assert_ne!(push["id"], pull["id"]);
    assert_ne!(push["request"]["id"], pull["request"]["id"]);
    let instance = &push["source"]["instanceID"];
    assert!(instance.as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(&pull["source"]["instanceID"], instance);
    assert!(
        push["source"]["addr"]
            .as_str()
            .is_some_and(|a| a.ends_with(&format!(":{}", registry.addr().port()))),
        "{push}"
    );
}

/// With the receiver down, deliveries fail and are retried with backoff; when it comes up
/// on its port, every event arrives, in the order the requests happened: blob pushes, the
/// manifest push, a pull (`HEAD` by tag then `GET` by digest: one event, with the tag), a
/// blob pull, a mount and a tag delete.
#[test]
fn receiver_down_events_are_retried_and_delivered_in_order() {
    let (socket, port) = reserved_port();
    let mut registry = RegistryProcess::start_with_config(&format!(
        r#"
        [[notifications]]
        url = "http://{port}/events"
        backoff_ms = 50
        max_backoff_ms = 400
        "#
    ));
    let api = Api::new(&registry);
    let image = TestImage::new("notify-retry");
    let manifest = api.push_image("notify/retry", "v1", &image);
    let config = rbuild_oci::Digest::sha256_of(&image.config);
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|l| rbuild_oci::Digest::sha256_of(l).to_string())
        .collect();
    // A tag resolved by HEAD and fetched by digest, as a fresh docker or containerd does.
    assert_eq!(api.head("/v2/notify/retry/manifests/v1").status(), 200);
    let by_digest = api
        .request(Method::GET, &format!("/v2/notify/retry/manifests/{manifest}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .expect("GET manifest");
    assert_eq!(by_digest.status(), 200);
    assert_eq!(api.get(&format!("/v2/notify/retry/blobs/{config}")).status(), 200);
    let mounted = api
        .request(
            Method::POST,
            &format!("/v2/notify/other/blobs/uploads/?mount={config}&from=notify/retry"),
        )
        .send()
        .expect("mount");
    assert_eq!(mounted.status(), 201);
    assert_eq!(api.delete("/v2/notify/retry/manifests/v1").status(), 202);

    wait_until("two failed delivery attempts", Duration::from_secs(20), || {
        registry.log().contains("attempt 2 failed")
    });
    let receiver = Receiver::start_on(socket, Behaviour::Acknowledge);
    let events = receiver.wait_for_events(8);
    let blob = "application/octet-stream";
    let config = config.to_string();
    let manifest = manifest.to_string();
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            event("push", "notify/retry", &config, "", blob),
            event("push", "notify/retry", &layers[0], "", blob),
            event("push", "notify/retry", &layers[1], "", blob),
            event(
                "push",
                "notify/retry",
                &manifest,
                "v1",
                "application/vnd.oci.image.manifest.v1+json"
            ),
            event(
                "pull",
                "notify/retry",
                &manifest,
                "v1",
                "application/vnd.oci.image.manifest.v1+json"
            ),
            event("pull", "notify/retry", &config, "", blob),
            event("mount", "notify/other", &config, "", blob),
            event("delete", "notify/retry", "", "v1", ""),
        ],
        "{events:#?}"
    );
    assert_eq!(events[6]["target"]["fromRepository"], "notify/retry");
    assert_eq!(events[0]["target"]["size"], image.config.len());
    wait_until("the recovery to be logged", Duration::from_secs(5), || {
        registry.log().contains("took the event after")
    });
    registry.kill();
}

/// A receiver that accepts the connection and never answers: each attempt gives up after
/// `timeout_secs` (the receiver sees the registry close no sooner), is logged as timed out and
/// counted as a failure, and is retried; once the receiver answers, the events arrive in
/// order. The pushes returned while the receiver had answered nothing, so they never waited
/// on a delivery (one that waited would wait for good: the receiver answers only when the
/// test says so, after the pushes).
#[test]
fn a_receiver_that_never_answers_times_out_and_is_retried() {
    let receiver = Receiver::start(Behaviour::Hang);
    let registry = registry_notifying(&[(
        "slow",
        &receiver,
        "timeout_secs = 2\nbackoff_ms = 50\nmax_backoff_ms = 100",
    )]);
    let api = Api::new(&registry);
    let image = TestImage::new("notify-timeout");
    let manifest = api.push_image("notify/timeout", "v1", &image);
    assert!(
        receiver.deliveries().is_empty(),
        "nothing was answered while the pushes ran"
    );

    wait_until("two timed-out attempts", Duration::from_secs(60), || {
        receiver.held().iter().filter(|h| h.is_some()).count() >= 2
    });
    receiver.acknowledge_from_now();
    let events = receiver.wait_for_events(4);
    let blob = "application/octet-stream";
    let digest = |bytes: &[u8]| rbuild_oci::Digest::sha256_of(bytes).to_string();
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            event("push", "notify/timeout", &digest(&image.config), "", blob),
            event("push", "notify/timeout", &digest(&image.layers[0]), "", blob),
            event("push", "notify/timeout", &digest(&image.layers[1]), "", blob),
            event(
                "push",
                "notify/timeout",
                &manifest.to_string(),
                "v1",
                "application/vnd.oci.image.manifest.v1+json"
            ),
        ],
        "{events:#?}"
    );

    // Every held connection was one attempt that timed out, none much before timeout_secs
    // (the registry's clock starts before it connects, the receiver's once it accepts).
    wait_until(
        "the registry to close every held connection",
        Duration::from_secs(10),
        || receiver.held().iter().all(Option::is_some),
    );
    let held: Vec<Duration> = receiver.held().into_iter().flatten().collect();
    assert!(
        held.iter().all(|h| *h >= Duration::from_millis(1500)),
        "an attempt gave up before the 2 s timeout: {held:?}"
    );
    let metrics = registry.url("/metrics");
    wait_until(
        "/metrics to count the 4 deliveries",
        Duration::from_secs(10),
        || Scrape::get(&metrics).value(&endpoint_series("events_delivered_total", "slow")) == 4.0,
    );
    let scrape = Scrape::get(&metrics);
    assert_eq!(
        scrape.value(&endpoint_series("delivery_failures_total", "slow")),
        held.len() as f64,
        "one failure per timed-out attempt\n{}",
        scrape.text
    );
    let log = registry.log();
    let timed_out = log
        .lines()
        .filter(|l| l.contains("notification endpoint slow") && l.contains("timed out"))
        .count();
    assert_eq!(timed_out, held.len(), "{log}");
    assert!(log.contains("took the event after"), "{log}");
}

/// `series` of the notification family `family` for `endpoint`.
fn endpoint_series(family: &str, endpoint: &str) -> String {
    format!("rbuild_registry_notification_{family}{{endpoint=\"{endpoint}\"}}")
}

/// A receiver that never answers and a queue of one: the docker push still succeeds, and
/// every event that found the queue full is dropped, counted in
/// `notification_events_dropped_total` and (at most once a second) logged as a warning naming
/// the endpoint. Exactly how many: the sender takes the first event and never finishes
/// delivering it, which leaves room for exactly one more, so of the N events the registry
/// published (a second endpoint, which takes everything, counts them) 2 are queued and N - 2
/// dropped.
#[test]
fn a_full_queue_drops_events_and_pushes_still_succeed() {
    let Some(docker) = Docker::get() else { return };
    let stuck = Receiver::start(Behaviour::Hang);
    let all = Receiver::start(Behaviour::Acknowledge);
    let registry = registry_notifying(&[
        ("stuck", &stuck, "queue_size = 1\ntimeout_secs = 600"),
        ("all", &all, ""),
    ]);
    let api = Api::new(&registry);
    // The first event: once its delivery has connected, the sender holds it and the queue is empty.
    let first = b"the event the sender holds";
    let pushed = api
        .request(
            Method::POST,
            &format!(
                "/v2/notify/full/blobs/uploads/?digest={}",
                rbuild_oci::Digest::sha256_of(first)
            ),
        )
        .body(first.to_vec())
        .send()
        .expect("POST blob");
    assert_eq!(pushed.status(), 201);
    wait_until("the stuck delivery to connect", Duration::from_secs(10), || {
        stuck.held().len() == 1
    });

    let remote = format!("{}/notify/full:v1", registry.host());
    run(docker.cmd().args(["tag", &docker.busybox_image(), &remote]));
    run(docker.cmd().args(["push", &remote]));
    assert_eq!(api.head("/v2/notify/full/manifests/v1").status(), 200);

    let metrics = registry.url("/metrics");
    let mut scrape = Scrape::get(&metrics);
    wait_until(
        "the other endpoint to take every event",
        Duration::from_secs(30),
        || {
            scrape = Scrape::get(&metrics);
            let delivered = scrape.value(&endpoint_series("events_delivered_total", "all"));
            delivered == scrape.value(&endpoint_series("events_queued_total", "all"))
                && delivered == all.events().len() as f64
        },
    );
    let published = all.events().len();
    assert!(
        published >= 4,
        "a blob, docker's blobs and manifest, a pull: {published}"
    );
    let stuck_series = |family: &str| scrape.value(&endpoint_series(family, "stuck"));
    assert_eq!(stuck_series("events_queued_total"), 2.0, "{}", scrape.text);
    assert_eq!(
        stuck_series("events_dropped_total"),
        (published - 2) as f64,
        "{}",
        scrape.text
    );
    assert_eq!(stuck_series("events_pending"), 2.0, "{}", scrape.text);
    assert_eq!(stuck_series("events_delivered_total"), 0.0, "{}", scrape.text);
    assert_eq!(scrape.value(&endpoint_series("events_dropped_total", "all")), 0.0);

    let log = registry.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("notification endpoint stuck")
            && l.contains("queue of 1 events is full; dropped a push event for notify/full")),
        "{log}"
    );
    assert!(stuck.events().is_empty());
    assert_eq!(stuck.held(), [None], "one delivery, still waiting for an answer");
}

/// With auth on, an event's actor is the user who made the request.
#[test]
fn the_actor_is_the_authenticated_user() {
    let receiver = Receiver::start(Behaviour::Acknowledge);
    let dir = tempfile::tempdir().expect("temp dir");
    let htpasswd = dir.path().join("htpasswd");
    crate::auth::add_user(&htpasswd, "alice", "wonderland");
    let registry = RegistryProcess::start_with_config(&format!(
        r#"
        [auth]
        mode = "htpasswd"
        htpasswd = "{}"
        [[notifications]]
        url = "{}"
        "#,
        htpasswd.display(),
        receiver.url()
    ));
    let bytes = b"pushed by alice";
    let digest = rbuild_oci::Digest::sha256_of(bytes);
    let pushed = Api::new(&registry)
        .request(
            Method::POST,
            &format!("/v2/notify/auth/blobs/uploads/?digest={digest}"),
        )
        .basic_auth("alice", Some("wonderland"))
        .body(bytes.to_vec())
        .send()
        .expect("POST blob");
    assert_eq!(pushed.status(), 201);
    let events = receiver.wait_for_events(1);
    assert_eq!(
        summary(&events[0]),
        event(
            "push",
            "notify/auth",
            &digest.to_string(),
            "",
            "application/octet-stream"
        )
    );
    assert_eq!(events[0]["actor"]["name"], "alice");
}
