//! The AT command layer without a board: framing, parsing, error codes, basic commands.

use esp_formats::partition::Partition;
use sparring_vboard::esp_at::{
    AtEngine, AtError, BoardAction, CommandKind, FirmwareInfo, MAX_LINE_LEN, MemoryFlash, Param,
    parse_line,
};
use sparring_vboard::personality::{AccessPoint, ApFault};

/// Two 8 KiB user partitions, erased.
fn flash() -> MemoryFlash {
    MemoryFlash::new(vec![
        Partition::new("mqtt_cert", 0x40, 12, 0x3A000, 0x2000),
        Partition::new("mqtt_ca", 0x40, 14, 0x3C000, 0x2000),
    ])
}

fn engine() -> AtEngine {
    let info = FirmwareInfo {
        at_version: "3.2.0.0".into(),
        idf_version: "v5.0.6".into(),
        compile_time: "Nov 22 2026 12:00:00".into(),
        chip_name: "ESP32".into(),
    };
    let mut at = AtEngine::new(info, 148_408);
    assert_eq!(at.feed(b"ATE0\r\n", &mut flash()), b"ATE0\r\n\r\nOK\r\n");
    at
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn parses_every_operation_type_and_escapes() {
    let set = parse_line(br#"AT+MQTTUSERCFG=0,5,"dev\"ice\,1","","",-3,,"p\\""#).expect("valid");
    assert_eq!(set.name, "+MQTTUSERCFG");
    assert_eq!(
        set.kind,
        CommandKind::Set(vec![
            Param::Int(0),
            Param::Int(5),
            Param::Str(b"dev\"ice,1".to_vec()),
            Param::Str(vec![]),
            Param::Str(vec![]),
            Param::Int(-3),
            Param::Omitted,
            Param::Str(b"p\\".to_vec()),
        ])
    );
    assert_eq!(
        parse_line(b"AT+SYSRAM?").expect("query").kind,
        CommandKind::Query
    );
    assert_eq!(
        parse_line(b"AT+CWMODE=?").expect("test").kind,
        CommandKind::Test
    );
    assert_eq!(
        parse_line(b"AT+GMR").expect("exec").kind,
        CommandKind::Execute
    );
    assert_eq!(
        parse_line(b"ATE1").expect("basic").kind,
        CommandKind::Set(vec![Param::Int(1)])
    );
}

#[test]
fn malformed_lines_name_the_failing_parameter() {
    assert_eq!(parse_line(b"HELLO"), Err(AtError::NoAt));
    assert_eq!(parse_line(br#"AT+X=1,"open"#), Err(AtError::ParamParse(1)));
    assert_eq!(parse_line(b"AT+X=1,abc"), Err(AtError::ParamParse(1)));
    assert_eq!(parse_line(br#"AT+X="a"b"#), Err(AtError::ParamParse(0)));
    assert_eq!(parse_line(b"AT+"), Err(AtError::Unsupported));
    assert_eq!(
        parse_line(b"AT+X=99999999999999999999"),
        Err(AtError::ParamParse(0))
    );
}

#[test]
fn basic_commands_answer_like_the_module() {
    let mut at = engine();
    assert_eq!(text(at.feed(b"AT\r\n", &mut flash())), "\r\nOK\r\n");
    assert_eq!(
        text(at.feed(b"AT+SYSRAM?\r\n", &mut flash())),
        "+SYSRAM:148408,148408\r\n\r\nOK\r\n"
    );
    assert!(
        text(at.feed(b"AT+GMR\r\n", &mut flash()))
            .starts_with("AT version:3.2.0.0(ESP32)\r\nSDK version:v5.0.6\r\n")
    );
    assert_eq!(
        text(at.feed(b"AT+CWMODE=3\r\nAT+CWMODE?\r\n", &mut flash())),
        "\r\nOK\r\n+CWMODE:3\r\n\r\nOK\r\n"
    );
    assert_eq!(at.take_action(), None);
    assert_eq!(text(at.feed(b"AT+RST\r\n", &mut flash())), "\r\nOK\r\n");
    assert_eq!(at.take_action(), Some(BoardAction::Restart));
}

#[test]
fn echo_is_on_until_ate0() {
    let info = FirmwareInfo {
        at_version: "2.2.0.0".into(),
        idf_version: "v4.4".into(),
        compile_time: "x".into(),
        chip_name: "ESP32-C3".into(),
    };
    let mut at = AtEngine::new(info, 1000);
    assert_eq!(text(at.feed(b"AT\r\n", &mut flash())), "AT\r\n\r\nOK\r\n");
    assert_eq!(
        text(at.feed(b"ATE0\r\nAT\r\n", &mut flash())),
        "ATE0\r\n\r\nOK\r\n\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"ATE1\r\nAT\r\n", &mut flash())),
        "\r\nOK\r\nAT\r\n\r\nOK\r\n"
    );
}

#[test]
fn errors_print_err_code_only_after_syslog_1() {
    let mut at = engine();
    assert_eq!(text(at.feed(b"AT+FAKE\r\n", &mut flash())), "\r\nERROR\r\n");
    assert_eq!(
        text(at.feed(b"AT+SYSLOG=1\r\n", &mut flash())),
        "\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+FAKE\r\n", &mut flash())),
        "ERR CODE:0x01090000\r\n\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CWMODE=7\r\n", &mut flash())),
        "ERR CODE:0x01070000\r\n\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CWMODE=\"1\"\r\n", &mut flash())),
        "ERR CODE:0x01050000\r\n\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+GMR=?\r\n", &mut flash())),
        "ERR CODE:0x010c0000\r\n\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT\n", &mut flash())),
        "ERR CODE:0x01020000\r\n\r\nERROR\r\n"
    );
}

#[test]
fn overlong_line_is_refused_and_the_next_line_works() {
    let mut at = engine();
    let mut long = b"AT+MQTTPUB=0,\"t\",\"".to_vec();
    long.resize(MAX_LINE_LEN * 4, b'x');
    long.extend_from_slice(b"\",0,0\r\n");
    assert_eq!(text(at.feed(&long, &mut flash())), "\r\nERROR\r\n");
    assert_eq!(text(at.feed(b"AT\r\n", &mut flash())), "\r\nOK\r\n");
    let mut max = b"AT+X=\"".to_vec();
    max.resize(MAX_LINE_LEN - 1, b'y');
    max.extend_from_slice(b"\"\r\n");
    // A maximal line reaches the parser (unknown command), it is not cut as overlong.
    at.feed(b"AT+SYSLOG=1\r\n", &mut flash());
    assert_eq!(
        text(at.feed(&max, &mut flash())),
        "ERR CODE:0x01090000\r\n\r\nERROR\r\n"
    );
}

#[test]
fn arbitrary_bytes_never_panic_and_the_engine_recovers() {
    let mut at = engine();
    // Deterministic pseudo-random input (xorshift), bounded in size.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2000 {
        let mut chunk = Vec::new();
        for _ in 0..64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let byte = [
                b'A', b'T', b'+', b'=', b'"', b'\\', b',', b'?', b'\r', b'\n', b'1',
            ][(state % 11) as usize];
            chunk.push(if state.is_multiple_of(7) {
                (state >> 8) as u8
            } else {
                byte
            });
        }
        at.feed(&chunk, &mut flash());
    }
    at.feed(b"\r\n", &mut flash());
    assert_eq!(
        text(at.feed(b"ATE0\r\nAT\r\n", &mut flash()))
            .rsplit("\r\n\r\n")
            .next(),
        Some("OK\r\n")
    );
}

#[test]
fn sysflash_lists_erases_writes_through_the_prompt_and_reads_back() {
    let mut at = engine();
    let mut memory = flash();
    assert_eq!(
        text(at.feed(b"AT+SYSFLASH?\r\n", &mut memory)),
        "+SYSFLASH:\"mqtt_cert\",64,12,0x3a000,0x2000\r\n+SYSFLASH:\"mqtt_ca\",64,14,0x3c000,0x2000\r\n\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+SYSFLASH=0,\"mqtt_ca\"\r\n", &mut memory)),
        "\r\nOK\r\n"
    );
    // The prompt comes alone; OK follows once exactly 6 raw bytes (CR LF included) arrived.
    assert_eq!(
        text(at.feed(b"AT+SYSFLASH=1,\"mqtt_ca\",0,6\r\n", &mut memory)),
        "\r\n>"
    );
    assert_eq!(text(at.feed(b"AT\r\n", &mut memory)), "");
    assert_eq!(text(at.feed(b"xy", &mut memory)), "\r\nOK\r\n");
    assert_eq!(
        text(at.feed(b"AT+SYSFLASH=2,\"mqtt_ca\",0,7\r\n", &mut memory)),
        "+SYSFLASH:7,AT\r\nxy\u{FFFD}\r\n\r\nOK\r\n"
    );
    // mqtt_cert untouched, unknown partition and out-of-range length refused.
    assert_eq!(
        memory.contents("mqtt_cert").map(|c| c[..4].to_vec()),
        Some(vec![0xFF; 4])
    );
    assert_eq!(
        text(at.feed(b"AT+SYSFLASH=0,\"nope\"\r\n", &mut memory)),
        "\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+SYSFLASH=1,\"mqtt_ca\",4096,4097\r\n", &mut memory)),
        "\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+SYSFLASH=0,\"mqtt_ca\",1,4096\r\n", &mut memory)),
        "\r\nERROR\r\n"
    );
}

#[test]
fn cwjap_joins_known_aps_and_reports_codes_1_to_4() {
    let ap = |ssid: &str, fault| AccessPoint {
        ssid: ssid.into(),
        password: "secret".into(),
        rssi: -45,
        fault,
    };
    let mut at = engine();
    at.set_access_points(vec![
        ap("lab", None),
        ap("silent", Some(ApFault::NoAnswer)),
        ap("picky", Some(ApFault::Refuses)),
    ]);
    let mut memory = flash();
    assert_eq!(
        text(at.feed(b"AT+CWJAP=\"silent\",\"secret\"\r\n", &mut memory)),
        "+CWJAP:1\r\n\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CWJAP=\"picky\",\"wrong\"\r\n", &mut memory)),
        "+CWJAP:2\r\n\r\nERROR\r\n",
        "a wrong password is found out before the AP refuses"
    );
    assert_eq!(
        text(at.feed(b"AT+CWJAP=\"picky\",\"secret\"\r\n", &mut memory)),
        "+CWJAP:4\r\n\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CWJAP=\"lab\",\"wrong\"\r\n", &mut memory)),
        "+CWJAP:2\r\n\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CWJAP=\"other\",\"secret\"\r\n", &mut memory)),
        "+CWJAP:3\r\n\r\nERROR\r\n"
    );
    assert_eq!(at.joined_ssid(), None);
    assert_eq!(
        text(at.feed(b"AT+CWJAP=\"lab\",\"secret\"\r\n", &mut memory)),
        "WIFI CONNECTED\r\nWIFI GOT IP\r\n\r\nOK\r\n"
    );
    assert_eq!(at.joined_ssid(), Some("lab"));
    assert_eq!(
        text(at.feed(b"AT+CWQAP\r\n", &mut memory)),
        "WIFI DISCONNECT\r\n\r\nOK\r\n"
    );
    assert_eq!(at.joined_ssid(), None);
}

#[test]
fn sntp_config_is_stored_and_time_prints_like_asctime() {
    let mut at = engine();
    let mut memory = flash();
    assert_eq!(
        text(at.feed(b"AT+CIPSNTPTIME?\r\n", &mut memory)),
        "+CIPSNTPTIME:Thu Jan  1 00:00:00 1970\r\n\r\nOK\r\n"
    );
    let reply = at.feed(b"AT+CIPSNTPCFG=1,8,\"sntp.sparring.test\"\r\n", &mut memory);
    assert_eq!(text(reply), "\r\nOK\r\n");
    let config = at.sntp_config().expect("enabled");
    assert_eq!(
        (config.timezone_hours, config.servers.clone()),
        (8, vec!["sntp.sparring.test".into()])
    );
    // 2021-09-02 10:57:03 UTC, shown at UTC+8 (the docs' example line).
    at.set_clock(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_630_580_223));
    assert_eq!(
        text(at.feed(b"AT+CIPSNTPTIME?\r\n", &mut memory)),
        "+CIPSNTPTIME:Thu Sep  2 18:57:03 2021\r\n\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CIPSNTPCFG=1,1500\r\n", &mut memory)),
        "\r\nERROR\r\n"
    );
}

#[test]
fn ssl_socket_configuration_and_refusals_without_a_connection() {
    let mut at = engine();
    let mut memory = flash();
    assert_eq!(
        text(at.feed(b"AT+CIPSSLCCONF?\r\n", &mut memory)),
        "+CIPSSLCCONF:0,0,0\r\n\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CIPSSLCCONF=3,1,2\r\n", &mut memory)),
        "\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CIPSSLCCONF?\r\n", &mut memory)),
        "+CIPSSLCCONF:3,1,2\r\n\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CIPSSLCSNI=\"broker.sparring.test\"\r\n", &mut memory)),
        "\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+CIPSSLCSNI?\r\n", &mut memory)),
        "+CIPSSLCSNI:\"broker.sparring.test\"\r\n\r\nOK\r\n"
    );
    for refused in [
        "AT+CIPSSLCCONF=4",
        "AT+CIPSTART=\"UDP\",\"host\",1",
        "AT+CIPSTART=\"SSL\",\"host\",0",
        // No Wi-Fi joined yet.
        "AT+CIPSTART=\"SSL\",\"broker.sparring.test\",8883",
        // Nothing to send on or close.
        "AT+CIPSEND=10",
        "AT+CIPCLOSE",
        "AT+CIPSEND=0",
    ] {
        assert_eq!(
            text(at.feed(format!("{refused}\r\n").as_bytes(), &mut memory)),
            "\r\nERROR\r\n",
            "{refused}"
        );
    }
}
