//! `AT+SYSMFG` on an `mfg_nvs` partition, checked against Espressif's own NVS generator
//! (`esp-idf-nvs-partition-gen`, installed by `.ci/run`): a partition it generates is read by
//! the AT command, and what the AT command writes is byte-identical to what it generates
//! for the same items.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use esp_formats::nvs::{self, Value};
use esp_formats::partition::{MFG_NVS, Partition};
use sparring_vboard::esp_at::{AtEngine, FirmwareInfo, MemoryFlash, Module};

const SIZE: u32 = 0x6000;

fn mfg_flash() -> MemoryFlash {
    MemoryFlash::new(vec![Partition::new(MFG_NVS, 0x01, 0x02, 0x1F000, SIZE)])
}

fn engine(flash: &mut MemoryFlash) -> AtEngine {
    let info = FirmwareInfo {
        at_version: "4.0.0.0".into(),
        idf_version: "v5.4.1".into(),
        compile_time: "Nov 22 2026 12:00:00".into(),
        chip_name: "ESP32-C3".into(),
    };
    let mut at = AtEngine::new(info, 148_408);
    assert_eq!(at.feed(b"ATE0\r\n", flash), b"ATE0\r\n\r\nOK\r\n");
    at
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs Espressif's generator on `csv` (file paths in it relative to `dir`).
fn generate(dir: &std::path::Path, csv: &str) -> Option<Vec<u8>> {
    std::fs::write(dir.join("in.csv"), csv).unwrap();
    let output = Command::new("python3")
        .current_dir(dir)
        .args([
            "-m",
            "esp_idf_nvs_partition_gen",
            "generate",
            "in.csv",
            "out.bin",
        ])
        .arg(format!("0x{SIZE:x}"))
        .output();
    match output {
        Ok(out) if out.status.success() => Some(std::fs::read(dir.join("out.bin")).unwrap()),
        Ok(out) if std::env::var("CI").as_deref() == Ok("true") || out.status.code() != Some(1) => {
            panic!("generator failed: {}", String::from_utf8_lossy(&out.stderr))
        }
        // Not installed outside CI (python exits 1 with "No module named ...").
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("python3 / esp-idf-nvs-partition-gen missing under CI")
        }
        _ => None,
    }
}

const CERT: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB...device...\n-----END CERTIFICATE-----\n";

#[test]
fn writes_lists_reads_and_erases_values_of_every_type() {
    let mut flash = mfg_flash();
    let mut at = engine(&mut flash);
    let prompt = text(
        at.feed(
            format!(
                "AT+SYSMFG=2,\"mqtt_cert\",\"mqtt_cert\",8,{}\r\n",
                CERT.len()
            )
            .as_bytes(),
            &mut flash,
        ),
    );
    assert_eq!(prompt, "\r\nOK\r\n\r\n>");
    assert_eq!(text(at.feed(CERT, &mut flash)), "\r\nOK\r\n");
    for line in [
        "AT+SYSMFG=2,\"factory_param\",\"uart_port\",1,1",
        "AT+SYSMFG=2,\"factory_param\",\"uart_baudrate\",6,115200",
        "AT+SYSMFG=2,\"factory_param\",\"tx_pin\",2,-1",
    ] {
        assert_eq!(
            text(at.feed(format!("{line}\r\n").as_bytes(), &mut flash)),
            "\r\nOK\r\n",
            "{line}"
        );
    }
    assert_eq!(
        text(at.feed(
            b"AT+SYSMFG=2,\"factory_param\",\"module_name\",7,6\r\n",
            &mut flash
        )),
        "\r\nOK\r\n\r\n>"
    );
    assert_eq!(text(at.feed(b"MINI-1", &mut flash)), "\r\nOK\r\n");

    let listing = text(at.feed(b"AT+SYSMFG?\r\n", &mut flash));
    assert!(
        listing.starts_with("+SYSMFG:\"factory_param\"\r\n"),
        "{listing}"
    );
    assert!(listing.contains("+SYSMFG:\"mqtt_ca\"\r\n"), "{listing}");
    assert_eq!(
        text(at.feed(b"AT+SYSMFG=1,\"factory_param\"\r\n", &mut flash)),
        "+SYSMFG:\"factory_param\",\"uart_port\",1\r\n\
         +SYSMFG:\"factory_param\",\"uart_baudrate\",6\r\n\
         +SYSMFG:\"factory_param\",\"tx_pin\",2\r\n\
         +SYSMFG:\"factory_param\",\"module_name\",7\r\n\r\nOK\r\n"
    );
    // Integers are printed in decimal; <length> counts their characters.
    assert_eq!(
        text(at.feed(
            b"AT+SYSMFG=1,\"factory_param\",\"uart_baudrate\"\r\n",
            &mut flash
        )),
        "+SYSMFG:\"factory_param\",\"uart_baudrate\",6,6,115200\r\n\r\nOK\r\n"
    );
    let read = at.feed(b"AT+SYSMFG=1,\"mqtt_cert\",\"mqtt_cert\"\r\n", &mut flash);
    let mut expected =
        format!("+SYSMFG:\"mqtt_cert\",\"mqtt_cert\",8,{},", CERT.len()).into_bytes();
    expected.extend_from_slice(CERT);
    expected.extend_from_slice(b"\r\n\r\nOK\r\n");
    assert_eq!(read, expected);
    // A slice by offset and length.
    assert_eq!(
        text(at.feed(
            b"AT+SYSMFG=1,\"mqtt_cert\",\"mqtt_cert\",5,5\r\n",
            &mut flash
        )),
        "+SYSMFG:\"mqtt_cert\",\"mqtt_cert\",8,5,BEGIN\r\n\r\nOK\r\n"
    );

    // The partition is real NVS: the shared reader sees exactly these items.
    let items = nvs::read(flash.contents(MFG_NVS).unwrap()).unwrap();
    assert_eq!(items.len(), 5);
    assert!(
        items
            .iter()
            .any(|i| i.key == "tx_pin" && i.value == Value::I8(-1))
    );

    // Erase one key, then a namespace; erasing what is not there is an error.
    assert_eq!(
        text(at.feed(b"AT+SYSMFG=0,\"factory_param\",\"tx_pin\"\r\n", &mut flash)),
        "\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+SYSMFG=1,\"factory_param\",\"tx_pin\"\r\n", &mut flash)),
        "\r\nERROR\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+SYSMFG=0,\"mqtt_cert\"\r\n", &mut flash)),
        "\r\nOK\r\n"
    );
    assert_eq!(
        text(at.feed(b"AT+SYSMFG=0,\"mqtt_cert\"\r\n", &mut flash)),
        "\r\nERROR\r\n"
    );
    assert_eq!(
        nvs::read(flash.contents(MFG_NVS).unwrap()).unwrap().len(),
        3
    );
}

#[test]
fn bad_sysmfg_parameters_answer_error() {
    let mut flash = mfg_flash();
    let mut at = engine(&mut flash);
    for line in [
        "AT+SYSMFG=3,\"mqtt_ca\"",
        "AT+SYSMFG=1,\"\"",
        "AT+SYSMFG=1,\"a_namespace_too_long\"",
        "AT+SYSMFG=2,\"ns\",\"key\",1,256",
        "AT+SYSMFG=2,\"ns\",\"key\",9,1",
        "AT+SYSMFG=2,\"ns\",\"key\",8,0",
        "AT+SYSMFG=2,\"ns\"",
        "AT+SYSMFG=1,\"mqtt_ca\",\"mqtt_ca\"",
    ] {
        assert_eq!(
            text(at.feed(format!("{line}\r\n").as_bytes(), &mut flash)),
            "\r\nERROR\r\n",
            "{line}"
        );
    }
    // Without an mfg_nvs partition (v2.x layout) the command fails.
    let mut v2 = MemoryFlash::new(vec![Partition::new("mqtt_ca", 0x40, 14, 0x3C000, 0x2000)]);
    assert_eq!(text(at.feed(b"AT+SYSMFG?\r\n", &mut v2)), "\r\nERROR\r\n");
}

#[test]
fn espressif_generator_and_sysmfg_agree_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mqtt_ca.pem"), CERT).unwrap();
    let csv = "key,type,encoding,value\n\
               factory_param,namespace,,\n\
               module_name,data,string,MINI-1\n\
               uart_port,data,u8,1\n\
               mqtt_ca,namespace,,\n\
               mqtt_ca,file,binary,mqtt_ca.pem\n";
    let Some(generated) = generate(dir.path(), csv) else {
        eprintln!("skipped: esp-idf-nvs-partition-gen not installed");
        return;
    };

    // Theirs read by the AT command.
    let mut flash = mfg_flash();
    let mut at = engine(&mut flash);
    let partition = flash.user_partitions()[0].clone();
    assert!(flash.write(&partition, 0, &generated));
    let read = at.feed(b"AT+SYSMFG=1,\"mqtt_ca\",\"mqtt_ca\"\r\n", &mut flash);
    let mut expected = format!("+SYSMFG:\"mqtt_ca\",\"mqtt_ca\",8,{},", CERT.len()).into_bytes();
    expected.extend_from_slice(CERT);
    expected.extend_from_slice(b"\r\n\r\nOK\r\n");
    assert_eq!(read, expected);

    // Ours, written item by item over AT, byte for byte theirs.
    let mut flash = mfg_flash();
    let mut at = engine(&mut flash);
    let feed =
        |at: &mut AtEngine, flash: &mut MemoryFlash, bytes: &[u8]| text(at.feed(bytes, flash));
    assert_eq!(
        feed(
            &mut at,
            &mut flash,
            b"AT+SYSMFG=2,\"factory_param\",\"module_name\",7,6\r\n"
        ),
        "\r\nOK\r\n\r\n>"
    );
    assert_eq!(feed(&mut at, &mut flash, b"MINI-1"), "\r\nOK\r\n");
    assert_eq!(
        feed(
            &mut at,
            &mut flash,
            b"AT+SYSMFG=2,\"factory_param\",\"uart_port\",1,1\r\n"
        ),
        "\r\nOK\r\n"
    );
    let write_ca = format!("AT+SYSMFG=2,\"mqtt_ca\",\"mqtt_ca\",8,{}\r\n", CERT.len());
    assert_eq!(
        feed(&mut at, &mut flash, write_ca.as_bytes()),
        "\r\nOK\r\n\r\n>"
    );
    assert_eq!(feed(&mut at, &mut flash, CERT), "\r\nOK\r\n");
    assert!(
        flash.contents(MFG_NVS) == Some(generated.as_slice()),
        "the partition written over AT differs from the generator's"
    );
}
