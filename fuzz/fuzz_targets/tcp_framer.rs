#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    warren_fuzz::tcp_framer(data);
});
