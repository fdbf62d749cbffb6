//! The engines harness (`spec_tests::engines`) against the real PostgreSQL and Garage: what
//! the cluster tests rely on — isolation per test on the shared engines, and private engines
//! that stop and start again with their data.

use spec_tests::engines::{Garage, Postgres};

#[test]
fn each_test_gets_a_database_of_its_own_dropped_after_it() {
    let Some(postgres) = Postgres::shared() else {
        return;
    };
    let (a, b) = (postgres.database(), postgres.database());
    assert_ne!(a.name(), b.name());
    postgres.psql(a.name(), "CREATE TABLE t (v int); INSERT INTO t VALUES (1)");
    assert_eq!(a.rows(), ["INSERT INTO public.t VALUES (1);"]);
    assert!(b.rows().is_empty(), "the other database sees nothing");
    let name = a.name().to_owned();
    drop(a);
    let left = postgres.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    );
    assert_eq!(left.trim(), "0", "the database is dropped with its handle");
}

#[test]
fn each_test_gets_a_prefix_of_its_own_emptied_after_it() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let (a, b) = (garage.prefix(), garage.prefix());
    assert_ne!(a.prefix(), b.prefix());
    let bucket = a.bucket().clone();
    let key = format!("{}blobs/x", a.prefix());
    bucket.put(&key, b"twelve bytes").unwrap();
    let objects = a.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!((objects[0].key.as_str(), objects[0].size), (key.as_str(), 12));
    assert!(b.objects().is_empty(), "the other prefix sees nothing");
    let prefix = a.prefix().to_owned();
    drop(a);
    assert!(
        bucket.list(&prefix).unwrap().is_empty(),
        "the prefix is emptied with its handle"
    );
}

#[test]
fn a_private_postgres_stops_and_starts_again_with_its_data() {
    let Some(postgres) = Postgres::private() else {
        return;
    };
    let database = postgres.database();
    postgres.psql(
        database.name(),
        "CREATE TABLE t (v int); INSERT INTO t VALUES (7)",
    );
    postgres.stop();
    let refused = std::process::Command::new(postgres.bin().join("psql"))
        .args(["-X", "-c", "SELECT 1", "-d"])
        .arg(database.url())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a stopped server answers nothing");
    postgres.start();
    assert_eq!(postgres.psql(database.name(), "SELECT v FROM t").trim(), "7");
}

#[test]
fn a_private_garage_stops_and_starts_again_with_its_objects() {
    let Some(garage) = Garage::private() else {
        return;
    };
    let prefix = garage.prefix();
    let key = format!("{}kept", prefix.prefix());
    garage.bucket().put(&key, b"data").unwrap();
    garage.stop();
    assert!(
        garage.bucket().list("").is_err(),
        "a stopped node answers nothing"
    );
    garage.start();
    let objects = prefix.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].key, key);
}
