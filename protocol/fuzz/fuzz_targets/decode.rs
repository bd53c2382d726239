//! Fuzzes the frame decoder: arbitrary input must give a typed error or a message that
//! re-encodes to a frame decoding to the same message; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::{Encoder, decode, decode_view, frame_len};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(len)) = frame_len(data) {
        assert!(len <= data.len());
        // The first frame of a stream decodes on its own or fails with a typed error.
        let _ = decode(&data[..len]);
    }
    match decode_view(data) {
        Ok(view) => {
            let msg = view.to_owned();
            assert_eq!(msg.frame_type(), view.frame_type());
            let again = Encoder::new()
                .encode_to_vec(&msg)
                .expect("a message that arrived in one frame fits in one frame");
            assert_eq!(decode(&again), Ok(msg));
        }
        Err(err) => {
            let _ = err.to_string();
            let _ = err.closes_connection();
        }
    }
});
