//! [`CommandStore`] on PostgreSQL: the Web UI API's commands, their output lines and each
//! user's command workspace. A command's output is written only by the node running it (its
//! seqs and byte count are that process's), so appends need no reads; the counters are
//! added to in place.

use super::{Postgres, bad_column, signed, unsigned};
use crate::store::{CommandOutputRecord, CommandRecord, CommandStatus, CommandStore, StoreResult};
use tokio_postgres::Row;

const COLUMNS: &str = "id, tenant, user_id, command, project_id, session_id, workspace_id, working_directory, status, pid, exit_code, started_at, completed_at, error, node, output_bytes, truncated";

fn command(row: &Row) -> StoreResult<CommandRecord> {
    let status: &str = row.try_get(8)?;
    Ok(CommandRecord {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        user_id: row.try_get(2)?,
        command: row.try_get(3)?,
        project_id: row.try_get(4)?,
        session_id: row.try_get(5)?,
        workspace_id: row.try_get(6)?,
        working_directory: row.try_get(7)?,
        status: CommandStatus::parse(status).ok_or_else(|| {
            bad_column(
                "status",
                anyhow::anyhow!("unknown command status {status:?}"),
            )
        })?,
        pid: row
            .try_get::<_, Option<i64>>(9)?
            .map(u32::try_from)
            .transpose()
            .map_err(|e| bad_column("pid", e.into()))?,
        exit_code: row
            .try_get::<_, Option<i64>>(10)?
            .map(i32::try_from)
            .transpose()
            .map_err(|e| bad_column("exit_code", e.into()))?,
        started_at: row.try_get(11)?,
        completed_at: row.try_get(12)?,
        error: row.try_get(13)?,
        node: row.try_get(14)?,
        output_bytes: unsigned(row.try_get(15)?),
        truncated: row.try_get(16)?,
    })
}

fn output_line(row: &Row) -> StoreResult<CommandOutputRecord> {
    Ok(CommandOutputRecord {
        seq: unsigned(row.try_get(0)?),
        stream: row.try_get(1)?,
        content: row.try_get(2)?,
        at: row.try_get(3)?,
    })
}

/// A `usize` count or position as a `BIGINT` parameter.
fn count(n: usize) -> i64 {
    signed(n as u64)
}

#[async_trait::async_trait]
impl CommandStore for Postgres {
    async fn insert_command(&self, c: &CommandRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO commands ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
            ),
            &[
                &c.id,
                &c.tenant,
                &c.user_id,
                &c.command,
                &c.project_id,
                &c.session_id,
                &c.workspace_id,
                &c.working_directory,
                &c.status.as_str(),
                &c.pid.map(i64::from),
                &c.exit_code.map(i64::from),
                &c.started_at,
                &c.completed_at,
                &c.error,
                &c.node,
                &signed(c.output_bytes),
                &c.truncated,
            ],
        )
        .await?;
        Ok(())
    }

    async fn finish_command(&self, c: &CommandRecord) -> StoreResult<()> {
        self.execute(
            "UPDATE commands SET status = $3, exit_code = $4, completed_at = $5, error = $6, pid = $7
             WHERE tenant = $1 AND id = $2",
            &[
                &c.tenant,
                &c.id,
                &c.status.as_str(),
                &c.exit_code.map(i64::from),
                &c.completed_at,
                &c.error,
                &c.pid.map(i64::from),
            ],
        )
        .await?;
        Ok(())
    }

    async fn append_command_output(
        &self,
        tenant: &str,
        id: &str,
        lines: &[CommandOutputRecord],
        bytes: u64,
        truncated: bool,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The counters first: the command's row lock then orders any other writer of it
        // until this batch commits. (An unknown id fails below, on the lines' foreign key,
        // as on SQLite.)
        tx.execute(
            &tx.prepare_cached(
                "UPDATE commands SET output_bytes = output_bytes + $3, truncated = truncated OR $4
                 WHERE tenant = $1 AND id = $2",
            )
            .await?,
            &[&tenant, &id, &signed(bytes), &truncated],
        )
        .await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO command_output (command_id, seq, stream, content, at) VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        for line in lines {
            tx.execute(
                &insert,
                &[
                    &id,
                    &signed(line.seq),
                    &line.stream,
                    &line.content,
                    &line.at,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_command(
        &self,
        tenant: &str,
        user_id: &str,
        id: &str,
    ) -> StoreResult<Option<CommandRecord>> {
        self.query_opt(
            &format!(
                "SELECT {COLUMNS} FROM commands WHERE tenant = $1 AND user_id = $2 AND id = $3"
            ),
            &[&tenant, &user_id, &id],
        )
        .await?
        .as_ref()
        .map(command)
        .transpose()
    }

    async fn command_output(
        &self,
        tenant: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<CommandOutputRecord>> {
        // Joined on the command so that a tenant reads only its own commands' lines.
        self.query(
            "SELECT o.seq, o.stream, o.content, o.at FROM command_output o
             JOIN commands c ON c.id = o.command_id
             WHERE c.tenant = $1 AND o.command_id = $2 AND o.seq > $3
             ORDER BY o.seq LIMIT $4",
            &[&tenant, &id, &signed(after_seq), &count(limit)],
        )
        .await?
        .iter()
        .map(output_line)
        .collect()
    }

    async fn list_commands(
        &self,
        tenant: &str,
        user_id: &str,
        running_only: bool,
        limit: usize,
        offset: usize,
    ) -> StoreResult<(Vec<CommandRecord>, u64)> {
        let filter = if running_only {
            "AND status = 'running'"
        } else {
            ""
        };
        // Both from one snapshot, so the total agrees with the page.
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let total: i64 = tx
            .query_one(
                &tx.prepare_cached(&format!(
                    "SELECT count(*) FROM commands WHERE tenant = $1 AND user_id = $2 {filter}"
                ))
                .await?,
                &[&tenant, &user_id],
            )
            .await?
            .try_get(0)?;
        // `rowid`: of commands started in the same millisecond, the one stored last first.
        let found = tx
            .query(
                &tx.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM commands WHERE tenant = $1 AND user_id = $2 {filter}
                     ORDER BY started_at DESC, rowid DESC LIMIT $3 OFFSET $4"
                ))
                .await?,
                &[&tenant, &user_id, &count(limit), &count(offset)],
            )
            .await?;
        tx.commit().await?;
        let commands = found.iter().map(command).collect::<StoreResult<_>>()?;
        Ok((commands, unsigned(total)))
    }

    async fn frequent_commands(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, u64)>> {
        // Ties last by the line's bytes, as SQLite's GROUP BY leaves them (whatever the
        // database's collation).
        self.query(
            "SELECT command, count(*) AS n FROM commands WHERE tenant = $1 AND user_id = $2
             GROUP BY command ORDER BY n DESC, max(started_at) DESC, command COLLATE \"C\" LIMIT $3",
            &[&tenant, &user_id, &count(limit)],
        )
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, unsigned(row.try_get(1)?))))
        .collect()
    }

    async fn interrupt_commands_of(&self, node: &str, now: i64) -> StoreResult<u64> {
        self.execute(
            "UPDATE commands SET status = 'interrupted', completed_at = $2,
                 error = 'gantry stopped while it ran'
             WHERE node = $1 AND status = 'running'",
            &[&node, &now],
        )
        .await
    }

    async fn command_workspace(&self, tenant: &str, user_id: &str) -> StoreResult<Option<String>> {
        self.query_opt(
            "SELECT workspace_id FROM command_workspaces WHERE tenant = $1 AND user_id = $2",
            &[&tenant, &user_id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(Into::into)
    }

    async fn set_command_workspace(
        &self,
        tenant: &str,
        user_id: &str,
        workspace_id: &str,
        replacing: Option<&str>,
    ) -> StoreResult<String> {
        // A stale id is replaced only if it is still the one stored: of two callers that
        // found it gone, the first one's new workspace wins. (ON CONFLICT waits for a
        // concurrent writer of the row and judges its committed value.)
        let client = self.client().await?;
        let upsert = client
            .prepare_cached(
                "INSERT INTO command_workspaces (tenant, user_id, workspace_id) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant, user_id) DO UPDATE SET workspace_id = excluded.workspace_id
                 WHERE command_workspaces.workspace_id = $4",
            )
            .await?;
        client
            .execute(&upsert, &[&tenant, &user_id, &workspace_id, &replacing])
            .await?;
        // Read in a statement of its own, so that it sees the winner's row even when that
        // committed after the upsert began.
        let read = client
            .prepare_cached(
                "SELECT workspace_id FROM command_workspaces WHERE tenant = $1 AND user_id = $2",
            )
            .await?;
        Ok(client
            .query_one(&read, &[&tenant, &user_id])
            .await?
            .try_get(0)?)
    }
}
