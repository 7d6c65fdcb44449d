//! `gantry:plugin/identity`: the tenant the host resolved from the request's credentials, and
//! on a `user_auth` route, the user.

use super::IdentityView;
use super::bindings::gantry::plugin::identity;
use crate::users::{Permission, Principal};

/// A permission as the WIT names it; the one mapping, used by `users` too.
pub(crate) fn permission(p: Permission) -> identity::Permission {
    match p {
        Permission::Read => identity::Permission::Read,
        Permission::Write => identity::Permission::Write,
        Permission::Execute => identity::Permission::Execute,
        Permission::Admin => identity::Permission::Admin,
    }
}

/// The other way.
pub(crate) fn from_permission(p: identity::Permission) -> Permission {
    match p {
        identity::Permission::Read => Permission::Read,
        identity::Permission::Write => Permission::Write,
        identity::Permission::Execute => Permission::Execute,
        identity::Permission::Admin => Permission::Admin,
    }
}

pub(crate) fn user_info(p: &Principal) -> identity::UserInfo {
    identity::UserInfo {
        id: p.id.clone(),
        username: p.username.clone(),
        email: p.email.clone(),
        permissions: p.permissions.iter().copied().map(permission).collect(),
        service: p.service,
    }
}

impl identity::Host for IdentityView<'_> {
    fn tenant(&mut self) -> String {
        self.tenant.to_string()
    }

    fn user(&mut self) -> Option<identity::UserInfo> {
        self.user.map(user_info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::TenantId;

    #[test]
    fn the_caller_is_the_resolved_tenant_and_user() {
        let tenant = TenantId::new("alice").unwrap();
        let mut view = IdentityView {
            tenant: &tenant,
            user: None,
        };
        assert_eq!(identity::Host::tenant(&mut view), "alice");
        assert!(identity::Host::user(&mut view).is_none());
        let service = Principal::service(&tenant);
        let mut view = IdentityView {
            tenant: &tenant,
            user: Some(&service),
        };
        let user = identity::Host::user(&mut view).unwrap();
        assert!(user.service);
        assert_eq!(user.permissions.len(), 4);
        for p in Permission::ALL {
            assert_eq!(from_permission(permission(p)), p);
        }
    }
}
