//! The PostgreSQL schema, embedded: each migration runs once, in order, recorded in
//! `kcideploy_schema_version`; a process applies the missing ones on its first connection,
//! under a transaction-scoped advisory lock so that two first uses do not race.

use tokio_postgres::Client;

/// The migrations, oldest first: version n is `MIGRATIONS[n - 1]`. Never edit one that
/// shipped: add the next.
pub const MIGRATIONS: &[&str] = &[
    // 1: state, run history, step ends (the journal), the lock's holder.
    "CREATE TABLE kcideploy_state (
        name text PRIMARY KEY,
        lineage text NOT NULL,
        serial bigint NOT NULL,
        format_version integer NOT NULL,
        body jsonb NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE SEQUENCE kcideploy_runs_seq;
    CREATE TABLE kcideploy_runs (
        name text NOT NULL,
        run_id text NOT NULL,
        seq bigint NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (name, run_id)
    );
    CREATE INDEX kcideploy_runs_order ON kcideploy_runs (name, seq);
    CREATE TABLE kcideploy_step_ends (
        seq bigserial PRIMARY KEY,
        name text NOT NULL,
        run_id text NOT NULL,
        entry jsonb NOT NULL,
        folded boolean NOT NULL DEFAULT false,
        at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX kcideploy_step_ends_run ON kcideploy_step_ends (name, run_id, seq);
    CREATE TABLE kcideploy_lock (
        name text PRIMARY KEY,
        id text NOT NULL,
        pid bigint NOT NULL,
        host text NOT NULL,
        operation text NOT NULL,
        created text NOT NULL,
        backend_pid integer NOT NULL
    );",
    // 2: `serve` replicas: the webhook queue they share, and who leads.
    "CREATE TABLE kcideploy_webhooks (
        seq bigserial PRIMARY KEY,
        name text NOT NULL,
        delivery text NOT NULL,
        entry jsonb NOT NULL,
        replied boolean NOT NULL DEFAULT false,
        acks integer NOT NULL DEFAULT 0,
        accepted_by text NOT NULL,
        accepted_at timestamptz NOT NULL DEFAULT now(),
        acked_at timestamptz,
        UNIQUE (name, delivery)
    );
    CREATE INDEX kcideploy_webhooks_waiting ON kcideploy_webhooks (name, seq)
        WHERE acked_at IS NULL;
    CREATE TABLE kcideploy_leader (
        name text PRIMARY KEY,
        replica text NOT NULL,
        host text NOT NULL,
        pid bigint NOT NULL,
        listen text NOT NULL,
        since text NOT NULL
    );",
];

/// The advisory lock key that serializes migrations (any constant distinct from state keys,
/// which [`super::lock_key`] derives with a prefix).
const MIGRATION_LOCK: i64 = 0x6b63_6964_6570_6c79; // "kcideply"

/// Apply the migrations this database lacks; returns the version it is at.
pub async fn migrate(client: &mut Client) -> Result<i64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS kcideploy_schema_version (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM kcideploy_schema_version",
            &[],
        )
        .await?;
    let at: i64 = row.get(0);
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(at.max(0) as usize) {
        tx.batch_execute(sql).await?;
        let version = n as i32 + 1;
        tx.execute(
            "INSERT INTO kcideploy_schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(at.max(MIGRATIONS.len() as i64))
}
