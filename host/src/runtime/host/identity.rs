//! `gantry:plugin/identity`: the tenant the host resolved from the request's credentials.

use super::bindings::gantry::plugin::identity;
use crate::tenants::TenantId;

impl identity::Host for &TenantId {
    fn tenant(&mut self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_the_resolved_tenant() {
        let tenant = TenantId::new("alice").unwrap();
        assert_eq!(identity::Host::tenant(&mut &tenant), "alice");
    }
}
