//! The PostgreSQL state backend against a real throwaway cluster (tests/common/postgres.rs):
//! compare-and-swap writes, the lock, run history and step ends as rows.

mod common;

use common::postgres::Postgres;

#[test]
fn the_harness_starts_a_cluster_and_stops_it_on_drop() {
    let pg = Postgres::start();
    let url = pg.database();
    assert_eq!(pg.psql_in(&url, "SELECT 1 + 1"), "2");
    let port = pg.port;
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the cluster still listens after the drop"
    );
}
