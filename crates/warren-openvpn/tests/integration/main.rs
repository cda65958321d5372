//! warren-openvpn's integration tests, in one test binary (one link in the release build).

mod engine;
mod tls_handshake;
mod tls_openssl;
mod tls_time;
