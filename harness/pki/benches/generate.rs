//! Prints how long generating and writing the complete default PKI takes (EC P-256 keys).
//! Target: under 100 ms in release (`cargo bench -p sparring-pki`).

use std::time::{Duration, Instant};

use sparring_pki::{Options, Pki};

fn main() {
    const ROUNDS: u32 = 20;
    let tmp = tempfile::tempdir().expect("temporary directory");
    // RSA keys (here the rsa-4096 and rsa-1024 leaves and the RSA-2048 intermediate behind
    // sha1-signature) come from the cache, as in normal use; the first round fills it.
    let cache = tmp.path().join("key-cache");
    let mut generate = Duration::ZERO;
    let mut write = Duration::ZERO;
    let mut best = Duration::MAX;
    for round in 0..=ROUNDS {
        let options = Options {
            key_cache: Some(cache.clone()),
            ..Options::default()
        };
        let start = Instant::now();
        let pki = Pki::generate(options).expect("generate");
        let generated = start.elapsed();
        pki.write(&tmp.path().join("out")).expect("write");
        let total = start.elapsed();
        if round == 0 {
            println!(
                "first run (fills the RSA key cache): {:.1} ms",
                total.as_secs_f64() * 1e3
            );
            continue;
        }
        generate += generated;
        write += total - generated;
        best = best.min(total);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(ROUNDS);
    println!(
        "complete default set, EC P-256, {ROUNDS} rounds: generate {:.1} ms + write {:.1} ms = {:.1} ms mean, {:.1} ms best (target < 100 ms)",
        ms(generate),
        ms(write),
        ms(generate + write),
        best.as_secs_f64() * 1e3
    );
}
