//! `gantry:plugin/backends`: the backends this node can run, and what a request would run.

use super::ServicesView;
use super::bindings::gantry::plugin::backends as wit;
use crate::contract::{PromptRequest, refusal_message};

impl wit::Host for ServicesView<'_> {
    async fn list(&mut self, refresh: bool) -> Vec<wit::Backend> {
        let availability = &self.services.backends;
        let statuses = if refresh {
            availability.probe_all().await
        } else {
            availability.list().await
        };
        statuses
            .into_iter()
            .filter_map(|b| {
                let info = &availability.backend(&b.name)?.info;
                Some(wit::Backend {
                    supports_resume: info.supports_resume,
                    supports_system_prompt: info.supports_system_prompt,
                    supports_model: info.supports_model,
                    supports_max_turns: info.supports_max_turns,
                    name: b.name,
                    binary: b.binary,
                    available: b.available,
                    version: b.version,
                    reason: b.reason,
                    checked_at: b.checked_at,
                })
            })
            .collect()
    }

    async fn preview(
        &mut self,
        name: String,
        request: PromptRequest,
    ) -> Result<Vec<String>, String> {
        let adapters = &self.services.adapters;
        let backend = adapters
            .backend(&name)
            .ok_or_else(|| format!("no backend named {name:?}"))?;
        let spec = adapters
            .build_command(&name, self.tenant, &request, Vec::new())
            .await
            .map_err(|f| f.message)?
            .map_err(|e| refusal_message(&e))?;
        Ok(std::iter::once(backend.binary.clone())
            .chain(spec.args)
            .collect())
    }
}
