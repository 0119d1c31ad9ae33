//! [`Accounts`]: local Matrix accounts, their devices and access tokens.
//!
//! Registration (with user-interactive authentication by `m.login.dummy`), password and JWT
//! login, access-token authentication and logout. Secrets are handled by `credentials.rs`
//! (argon2 passwords, SHA-256 of access tokens), the registration's user-interactive
//! authentication by `uia.rs`.
//!
//! A verified reTHINK identity `user://<idp>/<sub>` (a JWT login) maps to the account linked to
//! it, created on first login (if `matrix.jwt_create_accounts`) with the localpart
//! [`localpart_for_subject`] derives from `<sub>`. A name taken by another account is refused,
//! never merged. Localparts starting with [`RESERVED_PREFIX`] belong to the node's virtual users
//! of hyperties: nobody registers or logs in as them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ruma::api::client::uiaa::{AuthData, AuthType, UserIdentifier};
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};

use super::credentials::{
    PasswordHashing, check_password, new_access_token, new_device_id, random_bytes, token_hash,
};
use super::error::{MatrixError, uia_forbidden};
use super::subject::localpart_for_subject;
use super::uia::UiaSessions;
use crate::bridge::RESERVED_PREFIX;
use crate::config::MatrixConfig;
use crate::store::accounts::{AccountStore, NewAccount, NewDevice};

/// Longest device ID accepted from a client, in bytes.
const MAX_DEVICE_ID_BYTES: usize = 255;
/// The one message for every failed password login: it does not tell which part was wrong.
const BAD_CREDENTIALS: &str = "invalid username or password";

/// Who made an authenticated request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// The application service acting (with its `as_token`), if any.
    pub appservice: Option<std::sync::Arc<rethink_connectors::AppService>>,
}

/// The device a login or registration asks for.
#[derive(Debug, Clone, Default)]
pub struct DeviceRequest {
    /// An existing or new device ID; generated when `None`.
    pub device_id: Option<OwnedDeviceId>,
    /// The display name of a new device.
    pub display_name: Option<String>,
}

/// A logged-in device.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
}

/// A registration request, as the service needs it.
#[derive(Debug, Default)]
pub struct Registration {
    pub username: Option<String>,
    pub password: Option<String>,
    pub guest: bool,
    pub device: DeviceRequest,
    /// Register without logging in (no device, no token).
    pub inhibit_login: bool,
    /// The user-interactive authentication the client completed, if any.
    pub auth: Option<AuthData>,
}

/// A created account, logged in unless the registration inhibited it.
#[derive(Debug)]
pub struct Registered {
    pub user_id: OwnedUserId,
    pub session: Option<Session>,
}

/// The accounts service. Cheap to clone; the node holds one.
#[derive(Debug, Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: AccountStore,
    server_name: OwnedServerName,
    registration_enabled: bool,
    jwt_create_accounts: bool,
    hashing: PasswordHashing,
    uia: UiaSessions,
    /// Local account → the verified identity it is linked to (links never change).
    identities: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
}

impl Accounts {
    pub fn new(store: AccountStore, config: &MatrixConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                server_name: config.server_name.clone(),
                registration_enabled: config.registration_enabled,
                jwt_create_accounts: config.jwt_create_accounts,
                hashing: PasswordHashing::new(),
                uia: UiaSessions::default(),
                identities: Default::default(),
            }),
        }
    }

    /// The server name in this node's user IDs.
    pub fn server_name(&self) -> &OwnedServerName {
        &self.inner.server_name
    }

    /// The user ID of a local account.
    fn user_id(&self, localpart: &str) -> Result<OwnedUserId, MatrixError> {
        UserId::parse_with_server_name(localpart, &self.inner.server_name).map_err(|source| {
            MatrixError::StoredLocalpart {
                localpart: localpart.to_owned(),
                source,
            }
        })
    }

    /// The caller an access token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, MatrixError> {
        let owner = self
            .inner
            .store
            .token_owner(&token_hash(token))
            .await?
            .ok_or(MatrixError::UnknownToken)?;
        Ok(Caller {
            user_id: self.user_id(&owner.localpart)?,
            device_id: owner.device_id.into(),
            appservice: None,
        })
    }

    /// Checks that `username` can be registered and returns it as a localpart: a valid Matrix
    /// localpart (ASCII letters are lowercased), outside the reserved namespace, not taken.
    /// The verified identity (`user://idp/sub`) a local account is linked to, if any: what
    /// policies see as the principal of its Matrix actions.
    pub async fn linked_identity(&self, user: &UserId) -> Result<Option<String>, MatrixError> {
        if user.server_name() != self.inner.server_name {
            return Ok(None);
        }
        let localpart = user.localpart();
        if let Some(known) = crate::locks::lock(&self.inner.identities).get(localpart) {
            return Ok(known.clone());
        }
        let identity = self
            .inner
            .store
            .account(localpart)
            .await?
            .and_then(|a| a.external_subject);
        crate::locks::lock(&self.inner.identities).insert(localpart.to_owned(), identity.clone());
        Ok(identity)
    }

    /// Whether a local account with this localpart exists.
    pub async fn exists(&self, localpart: &str) -> Result<bool, MatrixError> {
        Ok(self.inner.store.account(localpart).await?.is_some())
    }

    pub async fn check_username(&self, username: &str) -> Result<String, MatrixError> {
        if !self.inner.registration_enabled {
            return Err(MatrixError::Forbidden("registration is disabled"));
        }
        let localpart = self.valid_localpart(username)?;
        if self.inner.store.account(&localpart).await?.is_some() {
            return Err(MatrixError::UserInUse);
        }
        Ok(localpart)
    }

    fn valid_localpart(&self, username: &str) -> Result<String, MatrixError> {
        let localpart = username.to_ascii_lowercase();
        if localpart.is_empty() {
            return Err(MatrixError::InvalidUsername("the username is empty"));
        }
        let conforming = UserId::parse(format!("@{localpart}:{}", self.inner.server_name))
            .ok()
            .filter(|id| id.localpart() == localpart && id.validate_strict().is_ok());
        if conforming.is_none() {
            return Err(MatrixError::InvalidUsername(
                "only a-z, 0-9 and . _ = - / + are allowed, in at most 255 bytes with the server name",
            ));
        }
        if localpart.starts_with(RESERVED_PREFIX) {
            return Err(MatrixError::Exclusive);
        }
        Ok(localpart)
    }

    /// Registers an account: registration must be enabled, the account not a guest, the
    /// username (if given) valid and free, user-interactive authentication (`m.login.dummy`)
    /// completed (otherwise 401 with the flows and a new session), and a password given. Without
    /// a username, one is generated.
    pub async fn register(&self, reg: Registration) -> Result<Registered, MatrixError> {
        if !self.inner.registration_enabled {
            return Err(MatrixError::Forbidden("registration is disabled"));
        }
        if reg.guest {
            return Err(MatrixError::GuestAccessForbidden);
        }
        let localpart = match &reg.username {
            Some(name) => Some(self.check_username(name).await?),
            None => None,
        };
        if let Some(password) = &reg.password {
            check_password(password)?;
        }
        check_device(&reg.device)?;
        // Clients discover the flows with a request that has no username or password yet.
        self.inner.uia.check(reg.auth.as_ref())?;
        let password = reg.password.ok_or(MatrixError::MissingParam("password"))?;

        let hash = self.inner.hashing.hash(password).await?;
        let localpart = match localpart {
            Some(l) => l,
            None => self.generated_localpart().await?,
        };
        let login = (!reg.inhibit_login)
            .then(|| NewLogin::new(reg.device))
            .transpose()?;
        let created = self
            .inner
            .store
            .create_account(
                NewAccount {
                    localpart: &localpart,
                    password_hash: Some(&hash),
                    external_subject: None,
                },
                login.as_ref().map(NewLogin::as_new_device),
                now(),
            )
            .await?;
        if !created {
            return Err(MatrixError::UserInUse);
        }
        let user_id = self.user_id(&localpart)?;
        tracing::info!(%user_id, "matrix account registered");
        Ok(Registered {
            session: login.map(|l| l.into_session(user_id.clone())),
            user_id,
        })
    }

    /// Registers a user of an application service (`m.login.application_service`): no
    /// password, no user-interactive authentication; the caller checked the namespace.
    pub async fn register_appservice(
        &self,
        username: &str,
        device: DeviceRequest,
        inhibit_login: bool,
    ) -> Result<Registered, MatrixError> {
        let localpart = self.valid_localpart(username)?;
        check_device(&device)?;
        let login = (!inhibit_login)
            .then(|| NewLogin::new(device))
            .transpose()?;
        let created = self
            .inner
            .store
            .create_account(
                NewAccount {
                    localpart: &localpart,
                    password_hash: None,
                    external_subject: None,
                },
                login.as_ref().map(NewLogin::as_new_device),
                now(),
            )
            .await?;
        if !created {
            return Err(MatrixError::UserInUse);
        }
        let user_id = self.user_id(&localpart)?;
        tracing::info!(%user_id, "application service user registered");
        Ok(Registered {
            session: login.map(|l| l.into_session(user_id.clone())),
            user_id,
        })
    }

    /// Creates an application service's sender user on its first request (no device).
    pub async fn create_appservice_user(&self, localpart: &str) -> Result<(), MatrixError> {
        match self
            .register_appservice(localpart, DeviceRequest::default(), true)
            .await
        {
            Ok(_) | Err(MatrixError::UserInUse) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A free localpart for a registration without a username.
    async fn generated_localpart(&self) -> Result<String, MatrixError> {
        for _ in 0..8 {
            let n = u64::from_le_bytes(random_bytes()?) % 1_000_000_000_000;
            let localpart = format!("u{n:012}");
            if self.inner.store.account(&localpart).await?.is_none() {
                return Ok(localpart);
            }
        }
        Err(MatrixError::NoFreeLocalpart)
    }

    /// Logs in with a password. `user` is a localpart or a full user ID of this server; every
    /// failure is the same 403.
    pub async fn login_password(
        &self,
        user: &str,
        password: &str,
        device: DeviceRequest,
    ) -> Result<Session, MatrixError> {
        check_device(&device)?;
        let localpart = self
            .login_localpart(user)
            .ok_or(MatrixError::Forbidden(BAD_CREDENTIALS))?;
        let hash = self
            .inner
            .store
            .account(&localpart)
            .await?
            .and_then(|a| a.password_hash)
            .ok_or(MatrixError::Forbidden(BAD_CREDENTIALS))?;
        if !self.inner.hashing.verify(password.to_owned(), hash).await? {
            return Err(MatrixError::Forbidden(BAD_CREDENTIALS));
        }
        self.log_in(&localpart, device).await
    }

    /// The localpart a login names: `alice` or `@alice:<server_name>` (case-insensitive).
    fn login_localpart(&self, user: &str) -> Option<String> {
        let user = user.to_ascii_lowercase();
        if user.starts_with('@') {
            let id = UserId::parse(&user).ok()?;
            (id.server_name() == self.inner.server_name).then(|| id.localpart().to_owned())
        } else {
            Some(user)
        }
    }

    /// Logs in the account linked to a verified identity (`user://<idp>/<sub>`, from a JWT),
    /// creating it on first login when the configuration allows.
    pub async fn login_identity(
        &self,
        subject: &str,
        device: DeviceRequest,
    ) -> Result<Session, MatrixError> {
        check_device(&device)?;
        let store = &self.inner.store;
        if let Some(localpart) = store.localpart_for_subject(subject).await? {
            return self.log_in(&localpart, device).await;
        }
        if !self.inner.jwt_create_accounts {
            return Err(MatrixError::Forbidden(
                "no account belongs to this identity",
            ));
        }
        let localpart = localpart_for_subject(subject)
            .filter(|l| self.valid_localpart(l).is_ok())
            .ok_or(MatrixError::Forbidden(
                "this identity maps to no valid user ID on this server",
            ))?;
        let login = NewLogin::new(device)?;
        let created = store
            .create_account(
                NewAccount {
                    localpart: &localpart,
                    password_hash: None,
                    external_subject: Some(subject),
                },
                Some(login.as_new_device()),
                now(),
            )
            .await?;
        if created {
            let user_id = self.user_id(&localpart)?;
            tracing::info!(%user_id, %subject, "matrix account created for a verified identity");
            return Ok(login.into_session(user_id));
        }
        // Lost a race with a login of the same identity, or the name belongs to someone else.
        match store.localpart_for_subject(subject).await? {
            Some(localpart) => self.log_in(&localpart, login.device).await,
            None => Err(MatrixError::Forbidden(
                "the user ID of this identity belongs to another account",
            )),
        }
    }

    /// Creates (or reuses) a device of an existing account with a new access token.
    async fn log_in(&self, localpart: &str, device: DeviceRequest) -> Result<Session, MatrixError> {
        let login = NewLogin::new(device)?;
        let ok = self
            .inner
            .store
            .login_device(localpart, login.as_new_device(), now())
            .await?;
        if !ok {
            return Err(MatrixError::Forbidden(BAD_CREDENTIALS));
        }
        Ok(login.into_session(self.user_id(localpart)?))
    }

    /// Checks the user-interactive authentication of a sensitive request (deleting devices):
    /// one stage, `m.login.password`, with the caller's own password. Without it, or with a
    /// wrong one, the answer is 401 with the flow and a session (and `M_FORBIDDEN` for a wrong
    /// password). An account without a password cannot pass.
    pub async fn check_password_uia(
        &self,
        caller: &Caller,
        auth: Option<&AuthData>,
    ) -> Result<(), MatrixError> {
        let uia = &self.inner.uia;
        let forbidden = |session: Option<&str>, message: &str| {
            let error = uia_forbidden(message.to_owned());
            uia.challenge(AuthType::Password, session, Some(error))
        };
        let password = match auth {
            None => return Err(uia.challenge(AuthType::Password, None, None)),
            Some(AuthData::Password(password)) => password,
            Some(other) => {
                let stage = other
                    .auth_type()
                    .map_or_else(|| "a fallback".to_owned(), |t| t.to_string());
                return Err(forbidden(
                    other.session(),
                    &format!("{stage} is not offered: use m.login.password"),
                ));
            }
        };
        let session = password.session.as_deref();
        if session.is_some_and(|s| !uia.is_live(s)) {
            return Err(MatrixError::Unsupported(
                "unknown or expired user-interactive authentication session".into(),
            ));
        }
        let named = match &password.identifier {
            UserIdentifier::Matrix(id) => self.login_localpart(&id.user),
            _ => None,
        };
        let localpart = caller.user_id.localpart();
        if named.as_deref() != Some(localpart) {
            return Err(forbidden(
                session,
                "authenticate as the user who makes the request",
            ));
        }
        let hash = self
            .inner
            .store
            .account(localpart)
            .await?
            .and_then(|a| a.password_hash);
        let ok = match hash {
            Some(hash) => {
                self.inner
                    .hashing
                    .verify(password.password.clone(), hash)
                    .await?
            }
            None => false,
        };
        if !ok {
            return Err(forbidden(session, BAD_CREDENTIALS));
        }
        Ok(())
    }

    /// Deletes the caller's device, revoking its access token.
    pub async fn logout(&self, caller: &Caller) -> Result<(), MatrixError> {
        self.inner
            .store
            .delete_device(caller.user_id.localpart(), caller.device_id.as_str())
            .await?;
        Ok(())
    }

    /// Deletes every device of the caller's account, revoking every access token.
    pub async fn logout_all(&self, caller: &Caller) -> Result<(), MatrixError> {
        self.inner
            .store
            .delete_all_devices(caller.user_id.localpart())
            .await?;
        Ok(())
    }
}

/// A device and fresh access token about to be stored.
struct NewLogin {
    device: DeviceRequest,
    device_id: OwnedDeviceId,
    token: String,
    hash: [u8; 32],
}

impl NewLogin {
    fn new(device: DeviceRequest) -> Result<Self, MatrixError> {
        let device_id = match &device.device_id {
            Some(id) => id.clone(),
            None => new_device_id()?,
        };
        let token = new_access_token()?;
        let hash = token_hash(&token);
        Ok(Self {
            device,
            device_id,
            token,
            hash,
        })
    }

    fn as_new_device(&self) -> NewDevice<'_> {
        NewDevice {
            device_id: self.device_id.as_str(),
            display_name: self.device.display_name.as_deref(),
            token_hash: &self.hash,
        }
    }

    fn into_session(self, user_id: OwnedUserId) -> Session {
        Session {
            user_id,
            device_id: self.device_id,
            access_token: self.token,
        }
    }
}

fn check_device(device: &DeviceRequest) -> Result<(), MatrixError> {
    match &device.device_id {
        Some(id) if id.as_str().is_empty() || id.as_str().len() > MAX_DEVICE_ID_BYTES => {
            Err(MatrixError::InvalidParam(format!(
                "device_id must have 1 to {MAX_DEVICE_ID_BYTES} bytes"
            )))
        }
        _ => Ok(()),
    }
}

/// Unix seconds.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
