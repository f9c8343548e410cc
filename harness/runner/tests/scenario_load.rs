//! Scenario files: a good one loads; broken ones, and steps that would pass whatever the
//! board does, name file:line:column and what was expected.

use std::path::Path;

use sparring_runner::scenario::{EVENT_KINDS, LoadError, Port, Step, parse};

const GOOD: &str = r#"id = "tls-server-expired"
title = "Server certificate expired"
tags = ["tls", "server"]
references = { device-advisor = "TLS_Expired_Server_Cert", badssl = "expired" }
board = { chips = ["esp32c3"], personality = "esp-at" }
setup = { server_profile = "expired", device_profile = "valid" }

[[steps]]
send = { port = "at", line = "AT" }

[[steps]]
expect = { port = "at", regex = "^OK$", within_ms = 2000 }

[[steps]]
expect-not = { port = "log", regex = "Guru Meditation", window_ms = 500 }
"#;

fn error_location(text: &str) -> (usize, usize, String) {
    match parse(Path::new("scenarios/x.toml"), text) {
        Err(LoadError::Invalid {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!(path, Path::new("scenarios/x.toml"));
            (line, column, message)
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

/// Without `[setup]` a scenario gets the same services as with an empty one: SNTP answers and
/// the broker asks for a client certificate (a derived `Default` once gave neither).
#[test]
fn a_scenario_without_setup_gets_the_default_services() {
    let without = GOOD.replace(
        "setup = { server_profile = \"expired\", device_profile = \"valid\" }\n",
        "",
    );
    let with_empty = without.replacen("[[steps]]", "[setup]\n\n[[steps]]", 1);
    for text in [without, with_empty] {
        let s = parse(Path::new("x.toml"), &text).unwrap();
        assert!(s.setup.sntp, "{text}");
        assert!(s.setup.client_auth, "{text}");
        assert_eq!(s.setup.sntp_ignore_requests, 0);
        assert!(s.setup.server_profile.is_none());
    }
}

#[test]
fn a_good_scenario_loads_with_its_steps() {
    let s = parse(Path::new("good.toml"), GOOD).unwrap();
    assert_eq!(s.id.get_ref(), "tls-server-expired");
    assert_eq!(s.references["badssl"], "expired");
    assert_eq!(s.steps.len(), 3);
    match s.steps[1].get_ref() {
        Step::Expect(e) => {
            assert_eq!(e.port, Port::At);
            assert_eq!(e.regex.get_ref(), "^OK$");
            assert_eq!(e.within_ms, 2000);
        }
        other => panic!("expected an expect step, got {other:?}"),
    }
}

#[test]
fn a_syntax_error_names_line_and_column() {
    let text = GOOD.replace("title = \"Server", "title = Server");
    let (line, column, message) = error_location(&text);
    assert_eq!((line, column), (2, 9), "{message}");
}

#[test]
fn an_unknown_step_kind_names_its_line_and_the_known_kinds() {
    let text = GOOD.replace("expect-not = {", "expect-none = {");
    let (line, column, message) = error_location(&text);
    assert_eq!((line, column), (15, 1), "{message}");
    assert!(
        message.contains("unknown variant `expect-none`"),
        "{message}"
    );
    assert!(message.contains("expect-not"), "{message}");
}

#[test]
fn a_bad_regex_points_at_the_regex() {
    assert_refused(
        &GOOD.replace("regex = \"^OK$\"", "regex = \"^OK($\""),
        (12, 33),
        "expected a valid regular expression",
    );
}

#[test]
fn a_missing_field_and_an_unknown_port_are_reported() {
    let text = GOOD.replace(", within_ms = 2000", "");
    let (line, _, message) = error_location(&text);
    assert_eq!(line, 12, "{message}");
    assert!(message.contains("within_ms"), "{message}");

    let text = GOOD.replace("port = \"at\", line", "port = \"uart7\", line");
    let (line, column, message) = error_location(&text);
    assert_eq!((line, column), (9, 17), "{message}");
    assert!(message.contains("unknown variant `uart7`"), "{message}");
}

#[test]
fn a_send_step_needs_one_payload_and_valid_hex() {
    let text = GOOD.replace("line = \"AT\"", "hex = \"0g\"");
    let (line, _, message) = error_location(&text);
    assert_eq!(line, 9, "{message}");
    assert!(message.starts_with("expected hex bytes"), "{message}");

    // A step is located at its `[[steps]]` header.
    let text = GOOD.replace(", line = \"AT\"", "");
    let (line, _, message) = error_location(&text);
    assert_eq!(line, 8, "{message}");
    assert!(
        message.contains("exactly one of `line`, `hex` or `data`"),
        "{message}"
    );
}

#[test]
fn a_bad_id_is_refused_where_it_is_written() {
    let text = GOOD.replace("tls-server-expired", "tls server");
    let (line, column, _) = error_location(&text);
    assert_eq!((line, column), (1, 6));
}

/// GOOD with its last step (the `[[steps]]` header at line 14) replaced by `step`.
fn with_last_step(step: &str) -> String {
    GOOD.replace(
        r#"expect-not = { port = "log", regex = "Guru Meditation", window_ms = 500 }"#,
        step,
    )
}

/// `text` is refused at `(line, column)` with a message that starts with `expected`.
fn assert_refused(text: &str, at: (usize, usize), expected: &str) {
    let (line, column, message) = error_location(text);
    assert_eq!((line, column), at, "{message}");
    assert!(message.starts_with(expected), "{message}");
}

fn assert_loads(text: &str) {
    if let Err(error) = parse(Path::new("x.toml"), text) {
        panic!("expected {text:?} to load: {error}");
    }
}

#[test]
fn an_assert_without_a_bound_is_refused_at_its_step() {
    assert_refused(
        &with_last_step(r#"assert = { fact = "free-heap" }"#),
        (14, 1),
        "expected `at_least` or `at_most` for assert \"free-heap\" (without a bound it always passes)",
    );
    assert_loads(&with_last_step(
        r#"assert = { fact = "free-heap", at_least = 1 }"#,
    ));
    assert_loads(&with_last_step(
        r#"assert = { fact = "free-heap", at_most = 1 }"#,
    ));
}

#[test]
fn a_scenario_without_steps_is_refused_at_its_empty_list() {
    let head = GOOD.split("\n[[steps]]").next().unwrap();
    assert_refused(
        &format!("{head}\nsteps = []\n"),
        (8, 9),
        "expected at least one step",
    );
}

#[test]
fn a_wait_event_for_an_unknown_kind_is_refused_listing_the_known_ones() {
    assert_refused(
        &with_last_step(r#"wait-event = { event = "device-conected", within_ms = 5000 }"#),
        (14, 1),
        &format!(
            "expected a wait-event `event` of {}, not \"device-conected\"",
            EVENT_KINDS.join(", ")
        ),
    );
}

#[test]
fn a_wait_event_must_match_something() {
    // The catch-all kind needs a regex; the specific kinds are a match by themselves.
    assert_refused(
        &with_last_step(r#"wait-event = { event = "mqtt", within_ms = 5000 }"#),
        (14, 1),
        "expected a `matching` regex for event \"mqtt\"",
    );
    assert_loads(&with_last_step(
        r#"wait-event = { event = "mqtt", matching = 'ToDevice CONNACK', within_ms = 5000 }"#,
    ));
    assert_loads(&with_last_step(
        r#"wait-event = { event = "device-connected", within_ms = 5000 }"#,
    ));

    // A regex that matches any line is no filter either; located at the regex.
    for anything in ["''", "'.*'", "'(code=)?'"] {
        assert_refused(
            &with_last_step(&format!(
                "wait-event = {{ event = \"published\", matching = {anything}, within_ms = 5000 }}"
            )),
            (15, 48),
            "expected a regular expression that needs some text",
        );
    }
}

#[test]
fn an_expect_that_matches_any_line_is_refused_but_an_empty_line_can_be_expected() {
    assert_refused(
        &GOOD.replace("regex = \"^OK$\"", "regex = \"\""),
        (12, 33),
        "expected a regular expression that needs some text",
    );
    assert_loads(&GOOD.replace("regex = \"^OK$\"", "regex = \"^$\""));
}

#[test]
fn the_known_event_kinds_are_the_kinds_the_executor_gives_events() {
    use std::collections::BTreeSet;
    let event = |fields: serde_json::Value| {
        let mut json = serde_json::json!({
            "at": "2026-01-01T00:00:00Z", "service": "mqtt", "peer": "127.0.0.1:8883"
        });
        json.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        serde_json::from_value::<sparring_services::Event>(json).unwrap()
    };
    let tls = |outcome: serde_json::Value| {
        event(serde_json::json!({
            "event": "tls", "sni": null, "alpn_offered": [], "cipher_suites_offered": [],
            "version": null, "cipher_suite": null, "client_cn": null, "client_issuer": null,
            "client_serial": null, "outcome": outcome, "duration_ms": 1
        }))
    };
    let mqtt = |direction: &str, packet: &str| {
        event(serde_json::json!({"event": "mqtt", "direction": direction, "packet": packet}))
    };
    let http = |status: u16, complete: bool| {
        event(serde_json::json!({
            "event": "http", "method": "GET", "path": "/x.bin", "status": status,
            "bytes_sent": 0, "body_complete": complete
        }))
    };
    let events = [
        tls(serde_json::json!({"outcome": "established"})),
        tls(
            serde_json::json!({"outcome": "rejected_by_us", "reason": "unknown-issuer", "detail": ""}),
        ),
        tls(serde_json::json!({"outcome": "aborted_by_peer", "alert": null})),
        tls(serde_json::json!({"outcome": "handshake_timeout"})),
        mqtt("from_device", "CONNECT"),
        mqtt("from_device", "PUBLISH"),
        mqtt("from_device", "SUBSCRIBE"),
        mqtt("to_device", "CONNACK"),
        event(serde_json::json!({"event": "sntp", "answered": true, "skew_seconds": 0})),
        http(200, true),
        http(404, false),
    ];
    let described: BTreeSet<String> = events
        .iter()
        .map(|e| sparring_runner::observe::describe(e).0)
        .collect();
    let known: BTreeSet<String> = EVENT_KINDS.iter().map(|k| k.to_string()).collect();
    assert_eq!(described, known);
}
