//! The throwaway server itself: it serves the ledger on a free port and is gone once its
//! handle drops, also when the test holding it panics.

use std::net::TcpStream;

use herdsman_ledger_postgres::test_server::TestServer;

#[test]
fn the_server_stops_when_its_handle_drops_even_in_a_panic() {
    let outcome = std::panic::catch_unwind(|| {
        let Some(server) =
            TestServer::start_or_skip("the_server_stops_when_its_handle_drops_even_in_a_panic")
        else {
            return;
        };
        TcpStream::connect(("127.0.0.1", server.port())).expect("the server listens");
        // A failing test: the handle drops while unwinding.
        std::panic::panic_any(server.port());
    });
    let Err(payload) = outcome else {
        return; // skipped: no PostgreSQL here
    };
    let port = *payload.downcast::<u16>().expect("the test's own panic");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server on port {port} still accepts connections after its handle dropped"
    );
}
