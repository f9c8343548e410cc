//! Scenario files: a good one loads; broken ones name file:line:column and what was expected.

use std::path::Path;

use sparring_runner::scenario::{LoadError, Port, Step, parse};

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
    let text = GOOD.replace("regex = \"^OK$\"", "regex = \"^OK($\"");
    let (line, column, message) = error_location(&text);
    assert_eq!((line, column), (12, 33), "{message}");
    assert!(
        message.starts_with("expected a valid regular expression"),
        "{message}"
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
