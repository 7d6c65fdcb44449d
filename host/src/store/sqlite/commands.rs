//! [`CommandStore`] on SQLite: the Web UI API's commands, their output lines and each user's
//! command workspace.

use super::Sqlite;
use crate::store::{CommandOutputRecord, CommandRecord, CommandStatus, CommandStore, StoreResult};
use rusqlite::{OptionalExtension, params};

const COLUMNS: &str = "id, tenant, user_id, command, project_id, session_id, workspace_id, working_directory, status, pid, exit_code, started_at, completed_at, error, node, output_bytes, truncated";

fn command(row: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRecord> {
    let status: String = row.get(8)?;
    Ok(CommandRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        user_id: row.get(2)?,
        command: row.get(3)?,
        project_id: row.get(4)?,
        session_id: row.get(5)?,
        workspace_id: row.get(6)?,
        working_directory: row.get(7)?,
        status: CommandStatus::parse(&status).ok_or_else(|| {
            super::bad_column(8, anyhow::anyhow!("unknown command status {status:?}"))
        })?,
        pid: row.get(9)?,
        exit_code: row.get(10)?,
        started_at: row.get(11)?,
        completed_at: row.get(12)?,
        error: row.get(13)?,
        node: row.get(14)?,
        output_bytes: row.get::<_, i64>(15)?.max(0) as u64,
        truncated: row.get(16)?,
    })
}

#[async_trait::async_trait]
impl CommandStore for Sqlite {
    async fn insert_command(&self, c: &CommandRecord) -> StoreResult<()> {
        self.execute(
            &format!(
                "INSERT INTO commands ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ),
            params![
                c.id,
                c.tenant,
                c.user_id,
                c.command,
                c.project_id,
                c.session_id,
                c.workspace_id,
                c.working_directory,
                c.status.as_str(),
                c.pid,
                c.exit_code,
                c.started_at,
                c.completed_at,
                c.error,
                c.node,
                c.output_bytes.min(i64::MAX as u64) as i64,
                c.truncated
            ],
        )?;
        Ok(())
    }

    async fn finish_command(&self, c: &CommandRecord) -> StoreResult<()> {
        self.execute(
            "UPDATE commands SET status = ?3, exit_code = ?4, completed_at = ?5, error = ?6, pid = ?7
             WHERE tenant = ?1 AND id = ?2",
            params![
                c.tenant,
                c.id,
                c.status.as_str(),
                c.exit_code,
                c.completed_at,
                c.error,
                c.pid
            ],
        )?;
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
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO command_output (command_id, seq, stream, content, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for line in lines {
                insert.execute(params![
                    id,
                    line.seq as i64,
                    line.stream,
                    line.content,
                    line.at
                ])?;
            }
        }
        tx.prepare_cached(
            "UPDATE commands SET output_bytes = output_bytes + ?3, truncated = truncated OR ?4
             WHERE tenant = ?1 AND id = ?2",
        )?
        .execute(params![
            tenant,
            id,
            bytes.min(i64::MAX as u64) as i64,
            truncated
        ])?;
        tx.commit()?;
        Ok(())
    }

    async fn get_command(
        &self,
        tenant: &str,
        user_id: &str,
        id: &str,
    ) -> StoreResult<Option<CommandRecord>> {
        Ok(self
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM commands WHERE tenant = ?1 AND user_id = ?2 AND id = ?3"
                ),
                params![tenant, user_id, id],
                command,
            )
            .optional()?)
    }

    async fn command_output(
        &self,
        tenant: &str,
        id: &str,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<CommandOutputRecord>> {
        let conn = self.conn();
        // Joined on the command so that a tenant reads only its own commands' lines.
        let mut stmt = conn.prepare_cached(
            "SELECT o.seq, o.stream, o.content, o.at FROM command_output o
             JOIN commands c ON c.id = o.command_id
             WHERE c.tenant = ?1 AND o.command_id = ?2 AND o.seq > ?3
             ORDER BY o.seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                tenant,
                id,
                after_seq.min(i64::MAX as u64) as i64,
                limit.min(i64::MAX as usize) as i64
            ],
            |row| {
                Ok(CommandOutputRecord {
                    seq: row.get::<_, i64>(0)?.max(0) as u64,
                    stream: row.get(1)?,
                    content: row.get(2)?,
                    at: row.get(3)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn list_commands(
        &self,
        tenant: &str,
        user_id: &str,
        running_only: bool,
        limit: usize,
        offset: usize,
    ) -> StoreResult<(Vec<CommandRecord>, u64)> {
        let conn = self.conn();
        let filter = if running_only {
            "AND status = 'running'"
        } else {
            ""
        };
        let total: i64 = conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM commands WHERE tenant = ?1 AND user_id = ?2 {filter}"
            ))?
            .query_row(params![tenant, user_id], |r| r.get(0))?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM commands WHERE tenant = ?1 AND user_id = ?2 {filter}
             ORDER BY started_at DESC, rowid DESC LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = stmt.query_map(
            params![
                tenant,
                user_id,
                limit.min(i64::MAX as usize) as i64,
                offset.min(i64::MAX as usize) as i64
            ],
            command,
        )?;
        Ok((rows.collect::<rusqlite::Result<_>>()?, total.max(0) as u64))
    }

    async fn frequent_commands(
        &self,
        tenant: &str,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT command, count(*) AS n FROM commands WHERE tenant = ?1 AND user_id = ?2
             GROUP BY command ORDER BY n DESC, max(started_at) DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![tenant, user_id, limit.min(i64::MAX as usize) as i64],
            |row| Ok((row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64)),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn interrupt_commands_of(&self, node: &str, now: i64) -> StoreResult<u64> {
        let n = self.execute(
            "UPDATE commands SET status = 'interrupted', completed_at = ?2,
                 error = 'gantry stopped while it ran'
             WHERE node = ?1 AND status = 'running'",
            params![node, now],
        )?;
        Ok(n as u64)
    }

    async fn command_workspace(&self, tenant: &str, user_id: &str) -> StoreResult<Option<String>> {
        Ok(self
            .query_row(
                "SELECT workspace_id FROM command_workspaces WHERE tenant = ?1 AND user_id = ?2",
                params![tenant, user_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    async fn set_command_workspace(
        &self,
        tenant: &str,
        user_id: &str,
        workspace_id: &str,
        replacing: Option<&str>,
    ) -> StoreResult<String> {
        // A stale id is replaced only if it is still the one stored: of two callers that
        // found it gone, the first one's new workspace wins.
        self.execute(
            "INSERT INTO command_workspaces (tenant, user_id, workspace_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant, user_id) DO UPDATE SET workspace_id = excluded.workspace_id
             WHERE command_workspaces.workspace_id = ?4",
            params![tenant, user_id, workspace_id, replacing],
        )?;
        Ok(self.query_row(
            "SELECT workspace_id FROM command_workspaces WHERE tenant = ?1 AND user_id = ?2",
            params![tenant, user_id],
            |r| r.get(0),
        )?)
    }
}
