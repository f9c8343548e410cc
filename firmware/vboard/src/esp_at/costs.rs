//! What the module's network stack costs in heap, so low-heap scenarios fail where hardware
//! fails. Figures are ESP-IDF's defaults, not measurements of a particular board:
//! - TLS session: mbedTLS record buffers sized by `CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN` (16384)
//!   and `CONFIG_MBEDTLS_SSL_OUT_CONTENT_LEN` (4096) plus per-record overhead (header 13,
//!   IV 16, MAC 48, padding 256 ⇒ 333 each), allocated by `mbedtls_ssl_setup` and held for the
//!   connection's life (esp-idf components/mbedtls/Kconfig; mbedtls ssl_misc.h).
//! - Handshake peak on top: certificate chain parsing and ECDHE, about 20 KB transient (the
//!   "32 KB + up to another 20 KB overhead" mbedTLS heap guidance for HTTPS clients,
//!   e.g. Zephyr's `CONFIG_MBEDTLS_HEAP_SIZE` help); freed when the handshake ends.
//! - MQTT client: esp-mqtt's `buffer_size` and `out_buffer_size` (1024 each) and its task
//!   stack (`CONFIG_MQTT_TASK_STACK_SIZE`, 6144).
//! - HTTP client for OTA: esp_http_client's default rx/tx buffers (512 each) and the OTA
//!   write buffer of one flash sector (4096).

/// `CONFIG_MBEDTLS_SSL_IN_CONTENT_LEN`: the largest record, and handshake message, mbedTLS takes.
pub const TLS_IN_CONTENT_LEN: u32 = 16_384;
pub const TLS_SESSION: u32 = TLS_IN_CONTENT_LEN + 333 + 4_096 + 333;
pub const TLS_HANDSHAKE_PEAK: u32 = 20_480;
pub const MQTT_CLIENT: u32 = 1_024 + 1_024 + 6_144;
pub const OTA_BUFFERS: u32 = 512 + 512 + 4_096;
/// `MALLOC_CAP_8BIT | MALLOC_CAP_DEFAULT`-style caps ESP-AT's alloc-failed hook prints.
pub const DEFAULT_CAPS: u32 = 0x1800;
