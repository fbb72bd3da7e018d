//! A resumed CSV output that is a stream (a FIFO here; a device or `/dev/stdout` alike)
//! cannot be read back for its header, and must not be sent a second one.

use std::process::Command;

use herdsman_io::{OutputFormat, Sink};

#[test]
fn a_resumed_csv_stream_gets_no_second_header() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.csv");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    // An earlier run sent `id,v\n1,a\n` (9 bytes) and committed it.
    let mut sink = Sink::open(&fifo, OutputFormat::Csv { columns: None }, Some(9)).unwrap();
    assert!(sink.is_stream());
    sink.write_record(br#"{"id":2,"v":"b"}"#).unwrap();
    sink.finish().unwrap();
    assert_eq!(reader.join().unwrap(), "2,b\n");
}
