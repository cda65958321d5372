#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_fuzz::tls_crypt_v2(data);
});
