//! `gantry:plugin/users`: logging in, and the caller's tenant's users. The host checks the
//! caller's `admin` permission itself, so a component granted `users` cannot manage users for
//! a caller who may not.

use super::UsersView;
use super::bindings::gantry::plugin::users as wit;
use super::identity::{from_permission, permission};
use crate::users::{Issued, NewUser, Permission, Principal, User, UserError};

fn user(u: User) -> wit::User {
    wit::User {
        id: u.id,
        username: u.username,
        email: u.email,
        permissions: u.permissions.into_iter().map(permission).collect(),
        disabled: u.disabled,
        created_at: u.created_at,
        last_login: u.last_login,
    }
}

fn issued(i: Issued) -> wit::Issued {
    wit::Issued {
        access_token: i.access_token,
        expires_in: u32::try_from(i.expires_in).unwrap_or(u32::MAX),
        user: user(i.user),
    }
}

fn user_error(e: UserError) -> wit::UserError {
    match e {
        UserError::InvalidCredentials => wit::UserError::InvalidCredentials,
        UserError::Disabled => wit::UserError::AccountDisabled,
        UserError::Throttled(s) => wit::UserError::Throttled(u32::try_from(s).unwrap_or(u32::MAX)),
        UserError::Forbidden(m) => wit::UserError::Forbidden(m),
        UserError::NotFound => wit::UserError::NotFound,
        UserError::Conflict(name) => {
            wit::UserError::Conflict(format!("username {name:?} is taken"))
        }
        UserError::Invalid { field, issue } => wit::UserError::Invalid(wit::FieldIssue {
            field: field.to_string(),
            issue,
        }),
        UserError::Internal(e) => {
            tracing::error!("user operation failed: {e:#}");
            wit::UserError::Internal("internal error".into())
        }
    }
}

impl UsersView<'_> {
    /// The calling user, if it holds `needed`.
    fn caller_with(&self, needed: Permission) -> Result<&Principal, wit::UserError> {
        let Some(user) = self.user else {
            return Err(wit::UserError::Forbidden(
                "this needs a logged-in user or an API key on a user_auth route".into(),
            ));
        };
        if !user.may(needed) {
            return Err(wit::UserError::Forbidden(format!(
                "this needs the {} permission",
                needed.as_str()
            )));
        }
        Ok(user)
    }

    fn token_holder(&self) -> Result<&Principal, wit::UserError> {
        self.user
            .ok_or_else(|| wit::UserError::Forbidden("this needs a logged-in user's token".into()))
    }
}

impl wit::Host for UsersView<'_> {
    async fn login(
        &mut self,
        username: String,
        password: String,
    ) -> Result<wit::Issued, wit::UserError> {
        self.users
            .login(&username, &password, self.client)
            .await
            .map(issued)
            .map_err(user_error)
    }

    async fn refresh(&mut self) -> Result<wit::Issued, wit::UserError> {
        let me = self.token_holder()?;
        self.users.refresh(me).await.map(issued).map_err(user_error)
    }

    async fn logout(&mut self) -> Result<(), wit::UserError> {
        let me = self.token_holder()?;
        self.users.logout(me).await.map_err(user_error)
    }

    async fn create(&mut self, new: wit::NewUser) -> Result<wit::User, wit::UserError> {
        self.caller_with(Permission::Admin)?;
        let permissions = if new.permissions.is_empty() {
            Permission::default_set()
        } else {
            new.permissions.into_iter().map(from_permission).collect()
        };
        let new = NewUser {
            tenant: self.tenant.clone(),
            username: new.username,
            email: new.email,
            password: new.password,
            permissions,
        };
        self.users.create(new).await.map(user).map_err(user_error)
    }

    async fn list(&mut self) -> Result<Vec<wit::User>, wit::UserError> {
        self.caller_with(Permission::Admin)?;
        let users = self.users.list(self.tenant).await.map_err(user_error)?;
        Ok(users.into_iter().map(user).collect())
    }

    async fn disable(&mut self, id: String) -> Result<wit::User, wit::UserError> {
        let me = self.caller_with(Permission::Admin)?;
        if me.id == id {
            return Err(wit::UserError::Forbidden(
                "an admin cannot disable itself; ask another admin or the operator".into(),
            ));
        }
        self.users
            .disable(self.tenant, &id)
            .await
            .map(user)
            .map_err(user_error)
    }

    async fn me(&mut self) -> Result<Option<wit::User>, wit::UserError> {
        let me = self.token_holder()?;
        if me.service {
            return Ok(None);
        }
        self.users
            .get(self.tenant, &me.id)
            .await
            .map(|u| Some(user(u)))
            .map_err(user_error)
    }

    async fn preferences(&mut self) -> Result<String, wit::UserError> {
        let me = self.caller_with(Permission::Read)?;
        let (json, _) = self.users.preferences(me).await.map_err(user_error)?;
        Ok(json)
    }

    async fn set_preferences(&mut self, json: String) -> Result<i64, wit::UserError> {
        let me = self.caller_with(Permission::Read)?;
        self.users
            .set_preferences(me, &json)
            .await
            .map_err(user_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::tenants::TenantId;
    use crate::users::Users;
    use crate::users::tokens::SigningKeys;
    use std::sync::Arc;
    use std::time::Duration;

    fn new_user(name: &str) -> wit::NewUser {
        wit::NewUser {
            username: name.into(),
            email: None,
            password: "correct horse".into(),
            permissions: vec![],
        }
    }

    #[tokio::test]
    async fn managing_users_needs_admin_and_stays_in_the_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::Sqlite::open(&dir.path().join("g.db")).unwrap());
        let users = Users::new(
            store,
            SigningKeys::ephemeral().unwrap(),
            Duration::from_secs(60),
        );
        let alice = TenantId::new("alice").unwrap();
        let bob = TenantId::new("bob").unwrap();
        let alices_key = Principal::service(&alice);
        let bobs_key = Principal::service(&bob);
        let mut as_alice = UsersView {
            users: &users,
            tenant: &alice,
            user: Some(&alices_key),
            client: None,
        };
        let ann = wit::Host::create(&mut as_alice, new_user("ann"))
            .await
            .unwrap();
        assert_eq!(ann.permissions.len(), 3, "read, write, execute by default");
        let mut as_bob = UsersView {
            users: &users,
            tenant: &bob,
            user: Some(&bobs_key),
            client: None,
        };
        assert!(wit::Host::list(&mut as_bob).await.unwrap().is_empty());
        assert!(matches!(
            wit::Host::disable(&mut as_bob, ann.id.clone()).await,
            Err(wit::UserError::NotFound)
        ));
        // Ann herself is no admin.
        let token = users.login("ann", "correct horse", None).await.unwrap();
        let ann_p = users.authenticate(&token.access_token).await.unwrap();
        let mut as_ann = UsersView {
            users: &users,
            tenant: &alice,
            user: Some(&ann_p),
            client: None,
        };
        assert!(matches!(
            wit::Host::list(&mut as_ann).await,
            Err(wit::UserError::Forbidden(_))
        ));
        let mut anonymous = UsersView {
            users: &users,
            tenant: &alice,
            user: None,
            client: None,
        };
        assert!(matches!(
            wit::Host::create(&mut anonymous, new_user("eve")).await,
            Err(wit::UserError::Forbidden(_))
        ));
        assert!(matches!(
            wit::Host::logout(&mut anonymous).await,
            Err(wit::UserError::Forbidden(_))
        ));
    }
}
