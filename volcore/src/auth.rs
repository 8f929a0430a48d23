//! Who may do what: roles bound to certificate identities, and tenants that group
//! policies and name who may use them.
//!
//! An identity is what a client certificate names: its subject's common name (the
//! user) and its organisations, organisational units and URI SANs (its groups). A
//! [`Subject`] names one of them — `user:alice`, `group:ops` — and the [`RoleMap`]
//! (one document at `auth/roles`, changed by compare-and-set) binds subjects to a
//! [`Role`]; an identity has the highest role any of its subjects is bound to. A
//! [`Tenant`] (`tenants/<name>`) groups policies and lists the subjects that may use
//! them; readers and operators act only on volumes of their tenants' policies, admins on
//! everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keys::Keys;
use crate::kv::{KvError, KvStore, Precondition, PutOpts};
use crate::name::{PolicyName, TenantName};

/// What an identity may do; each role includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Gets and lists inside its tenants.
    Reader,
    /// Volume create, remove, runtime, snapshot, copy and `use exec` inside its tenants.
    Operator,
    /// Everything: the global configuration, policies, tenants, roles, every force
    /// operation, lock removal and `check --repair`.
    Admin,
}

impl Role {
    /// Its name (`reader`, `operator`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s {
            "reader" => Ok(Self::Reader),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            _ => Err(AuthError::BadRole(s.to_owned())),
        }
    }
}

/// A user (`user:<CN>`) or a group (`group:<O, OU or URI SAN>`) that roles and tenants
/// name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject(String);

/// The longest name a subject may hold (a URI SAN can be long).
const MAX_SUBJECT_NAME: usize = 512;

impl Subject {
    /// Parses `user:<name>` or `group:<name>`: a name of 1 to 512 characters without
    /// control characters.
    pub fn new(s: impl Into<String>) -> Result<Self, AuthError> {
        let s = s.into();
        let bad = |why: &str| AuthError::BadSubject {
            subject: s.chars().take(80).collect(),
            why: why.to_owned(),
        };
        let name = s
            .strip_prefix("user:")
            .or_else(|| s.strip_prefix("group:"))
            .ok_or_else(|| {
                bad("must start with user: (a certificate's CN) or group: (its O, OU or URI SAN)")
            })?;
        if name.is_empty() || name.len() > MAX_SUBJECT_NAME {
            return Err(bad("needs a name of 1 to 512 characters after the colon"));
        }
        if name.chars().any(char::is_control) {
            return Err(bad("must not hold control characters"));
        }
        Ok(Self(s))
    }

    /// The user subject of a certificate CN.
    pub fn user(name: &str) -> Result<Self, AuthError> {
        Self::new(format!("user:{name}"))
    }

    /// The group subject of an O, OU or URI SAN.
    pub fn group(name: &str) -> Result<Self, AuthError> {
        Self::new(format!("group:{name}"))
    }

    /// The subject as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for Subject {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        Self::new(s)
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Role and tenant errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a role name.
    #[error("unknown role {0:?}; roles are reader, operator and admin")]
    BadRole(String),
    /// Not a subject.
    #[error("subject {subject:?} {why}")]
    BadSubject {
        /// The subject as given.
        subject: String,
        /// What is wrong.
        why: String,
    },
    /// A tenant document is invalid.
    #[error("tenant {tenant}: {why}")]
    BadTenant {
        /// The tenant.
        tenant: String,
        /// What is wrong.
        why: String,
    },
    /// The tenant does not exist.
    #[error("tenant {0} does not exist")]
    NoTenant(TenantName),
    /// The subject has no role.
    #[error("{0} has no role")]
    NoRole(Subject),
    /// A stored document is unreadable.
    #[error("stored {what} is corrupt: {error}")]
    Corrupt {
        /// Which document.
        what: String,
        /// The decoder's error.
        error: serde_json::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// The identity → role map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoleMap {
    /// Each subject's role.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, Role>))]
    pub bindings: BTreeMap<Subject, Role>,
}

/// A tenant: policies, and the subjects that may use them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Its name (from the path it is stored at; an uploaded document may repeat it).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub name: Option<TenantName>,
    /// The policies it groups.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub policies: BTreeSet<PolicyName>,
    /// Who may use them (`user:…`, `group:…`), with the role each has in the role map.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub members: BTreeSet<Subject>,
}

impl Tenant {
    /// Parses an uploaded tenant document (`{"policies":[…],"members":[…]}`).
    pub fn from_json(name: &TenantName, json: &[u8]) -> Result<Self, AuthError> {
        let mut t: Self = serde_json::from_slice(json).map_err(|e| AuthError::BadTenant {
            tenant: name.to_string(),
            why: format!(
                "{e}; write {{\"policies\": [\"policy1\"], \"members\": [\"user:alice\", \"group:ops\"]}}"
            ),
        })?;
        if let Some(n) = &t.name {
            if n != name {
                return Err(AuthError::BadTenant {
                    tenant: name.to_string(),
                    why: format!(
                        "the document names tenant {n}; upload it as {n}, or drop its \"name\""
                    ),
                });
            }
        }
        t.name = Some(name.clone());
        Ok(t)
    }
}

/// Who a request comes from, with what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user (a certificate's CN), or `None` for the local admin of an installation
    /// without TLS.
    pub user: Option<String>,
    /// Its groups.
    pub groups: Vec<String>,
    /// Its highest role, if any.
    pub role: Option<Role>,
    /// The tenants it is a member of.
    pub tenants: BTreeSet<TenantName>,
    /// The policies of those tenants.
    pub policies: BTreeSet<PolicyName>,
}

impl Principal {
    /// The admin of an installation without TLS (loopback, or `--insecure`).
    pub fn local_admin() -> Self {
        Self {
            user: None,
            groups: Vec::new(),
            role: Some(Role::Admin),
            tenants: BTreeSet::new(),
            policies: BTreeSet::new(),
        }
    }

    /// How to name it in messages.
    pub fn describe(&self) -> String {
        match &self.user {
            Some(u) => format!("user:{u}"),
            None => "the local admin".to_owned(),
        }
    }

    /// Whether it has at least `role`.
    pub fn has(&self, role: Role) -> bool {
        self.role.is_some_and(|r| r >= role)
    }

    /// Whether it may act on `policy`'s volumes: admins on all, others on their
    /// tenants' policies.
    pub fn may_use(&self, policy: &PolicyName) -> bool {
        self.has(Role::Admin) || self.policies.contains(policy)
    }
}

/// Everything authorization reads: the role map, the tenants, and the admins given on
/// the command line (`--admin-identity`), which no store change can remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthView {
    /// The role map.
    pub roles: RoleMap,
    /// The tenants.
    pub tenants: BTreeMap<TenantName, Tenant>,
    /// Subjects that are admins whatever the role map says.
    pub bootstrap_admins: BTreeSet<Subject>,
}

impl AuthView {
    /// What the identity `user` with `groups` may do.
    pub fn principal(&self, user: &str, groups: &[String]) -> Principal {
        let subjects: Vec<Subject> = Subject::user(user)
            .into_iter()
            .chain(groups.iter().filter_map(|g| Subject::group(g).ok()))
            .collect();
        let bootstrap = subjects
            .iter()
            .any(|s| self.bootstrap_admins.contains(s))
            .then_some(Role::Admin);
        let role = subjects
            .iter()
            .filter_map(|s| self.roles.bindings.get(s).copied())
            .chain(bootstrap)
            .max();
        let mine: Vec<&Tenant> = self
            .tenants
            .values()
            .filter(|t| subjects.iter().any(|s| t.members.contains(s)))
            .collect();
        Principal {
            user: Some(user.to_owned()),
            groups: groups.to_vec(),
            role,
            tenants: mine.iter().filter_map(|t| t.name.clone()).collect(),
            policies: mine
                .iter()
                .flat_map(|t| t.policies.iter().cloned())
                .collect(),
        }
    }

    /// Reads the role map and every tenant.
    pub async fn load(kv: &dyn KvStore, keys: &Keys) -> Result<Self, AuthError> {
        let roles = read_roles(kv, keys).await?.0;
        let mut tenants = BTreeMap::new();
        for e in kv.list(&keys.tenants()).await? {
            let Some(name) = e
                .key
                .strip_prefix(&keys.tenants())
                .and_then(|n| TenantName::new(n).ok())
            else {
                continue;
            };
            let t = decode_tenant(&name, &e.value)?;
            tenants.insert(name, t);
        }
        Ok(Self {
            roles,
            tenants,
            bootstrap_admins: BTreeSet::new(),
        })
    }
}

async fn read_roles(kv: &dyn KvStore, keys: &Keys) -> Result<(RoleMap, Precondition), AuthError> {
    match kv.get(&keys.roles()).await? {
        None => Ok((RoleMap::default(), Precondition::Absent)),
        Some(e) => {
            let m = serde_json::from_slice(&e.value).map_err(|error| AuthError::Corrupt {
                what: "role map".into(),
                error,
            })?;
            Ok((m, Precondition::Revision(e.mod_rev)))
        }
    }
}

/// Changes the role map with `f`, retrying when another change came first.
async fn update_roles(
    kv: &dyn KvStore,
    keys: &Keys,
    f: impl Fn(&mut RoleMap) -> Result<(), AuthError>,
) -> Result<RoleMap, AuthError> {
    // Bounded: each lost race means another admin's change landed.
    let mut tries = 0;
    loop {
        let (mut m, pre) = read_roles(kv, keys).await?;
        f(&mut m)?;
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        let opts = PutOpts {
            precondition: pre,
            lease: None,
        };
        match kv.put(&keys.roles(), bytes, opts).await {
            Ok(_) => return Ok(m),
            Err(KvError::Conflict { .. }) if tries < 20 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Binds `subject` to `role`.
pub async fn grant(
    kv: &dyn KvStore,
    keys: &Keys,
    subject: &Subject,
    role: Role,
) -> Result<RoleMap, AuthError> {
    update_roles(kv, keys, |m| {
        m.bindings.insert(subject.clone(), role);
        Ok(())
    })
    .await
}

/// Removes `subject`'s role.
pub async fn revoke(
    kv: &dyn KvStore,
    keys: &Keys,
    subject: &Subject,
) -> Result<RoleMap, AuthError> {
    update_roles(kv, keys, |m| {
        m.bindings
            .remove(subject)
            .map(drop)
            .ok_or_else(|| AuthError::NoRole(subject.clone()))
    })
    .await
}

/// The role map.
pub async fn roles(kv: &dyn KvStore, keys: &Keys) -> Result<RoleMap, AuthError> {
    Ok(read_roles(kv, keys).await?.0)
}

/// Stores a tenant (replacing one of that name).
pub async fn put_tenant(kv: &dyn KvStore, keys: &Keys, t: &Tenant) -> Result<(), AuthError> {
    let name = t.name.clone().ok_or_else(|| AuthError::BadTenant {
        tenant: "?".into(),
        why: "has no name".into(),
    })?;
    let bytes = serde_json::to_vec(t).unwrap_or_default();
    kv.put(&keys.tenant(&name), bytes, PutOpts::default())
        .await?;
    Ok(())
}

/// One tenant.
pub async fn tenant(kv: &dyn KvStore, keys: &Keys, t: &TenantName) -> Result<Tenant, AuthError> {
    let e = kv
        .get(&keys.tenant(t))
        .await?
        .ok_or_else(|| AuthError::NoTenant(t.clone()))?;
    decode_tenant(t, &e.value)
}

/// A stored tenant, named by its key.
fn decode_tenant(name: &TenantName, bytes: &[u8]) -> Result<Tenant, AuthError> {
    let mut t: Tenant = serde_json::from_slice(bytes).map_err(|error| AuthError::Corrupt {
        what: format!("tenant {name}"),
        error,
    })?;
    t.name = Some(name.clone());
    Ok(t)
}

/// Deletes a tenant (its policies and their volumes stay).
pub async fn delete_tenant(kv: &dyn KvStore, keys: &Keys, t: &TenantName) -> Result<(), AuthError> {
    if kv.delete(&keys.tenant(t), Precondition::Any).await? {
        Ok(())
    } else {
        Err(AuthError::NoTenant(t.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, policies: &[&str], members: &[&str]) -> Tenant {
        Tenant {
            name: Some(TenantName::new(name).unwrap()),
            policies: policies
                .iter()
                .map(|p| PolicyName::new(*p).unwrap())
                .collect(),
            members: members.iter().map(|m| Subject::new(*m).unwrap()).collect(),
        }
    }

    #[test]
    fn an_identity_has_its_highest_role_and_its_tenants_policies() {
        let mut v = AuthView::default();
        v.roles
            .bindings
            .insert(Subject::new("user:alice").unwrap(), Role::Reader);
        v.roles
            .bindings
            .insert(Subject::new("group:ops").unwrap(), Role::Operator);
        for t in [
            tenant("blue", &["p1", "p2"], &["group:ops"]),
            tenant("red", &["p3"], &["user:bob"]),
        ] {
            v.tenants.insert(t.name.clone().unwrap(), t);
        }
        let a = v.principal("alice", &["ops".into()]);
        assert_eq!(a.role, Some(Role::Operator));
        assert!(a.may_use(&PolicyName::new("p2").unwrap()));
        assert!(!a.may_use(&PolicyName::new("p3").unwrap()));
        assert!(a.has(Role::Reader) && !a.has(Role::Admin));
        let b = v.principal("bob", &[]);
        assert_eq!(b.role, None);
        assert_eq!(b.tenants.len(), 1);
        // A CN that happens to equal a group name is still only that user.
        let ops = v.principal("ops", &[]);
        assert_eq!(ops.role, None);
        v.bootstrap_admins.insert(Subject::user("root").unwrap());
        let r = v.principal("root", &[]);
        assert!(r.has(Role::Admin) && r.may_use(&PolicyName::new("p3").unwrap()));
    }

    #[test]
    fn subjects_and_roles_are_validated() {
        for bad in ["alice", "user:", "group:a\nb", "role:x"] {
            assert!(Subject::new(bad).is_err(), "{bad}");
        }
        assert!(Subject::new("user:alice@example.com").is_ok());
        assert!(Subject::new("group:spiffe://volcore/tenant/blue").is_ok());
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        let e = "root".parse::<Role>().unwrap_err().to_string();
        assert!(e.contains("reader, operator and admin"), "{e}");
        let e = Tenant::from_json(
            &TenantName::new("t").unwrap(),
            br#"{"policies":["p"],"memberz":[]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("memberz") && e.contains("members"), "{e}");
    }

    #[tokio::test]
    async fn grants_and_revocations_compose() {
        let kv = crate::MemKv::new();
        let keys = Keys::default();
        let alice = Subject::user("alice").unwrap();
        grant(&kv, &keys, &alice, Role::Reader).await.unwrap();
        grant(&kv, &keys, &Subject::group("ops").unwrap(), Role::Admin)
            .await
            .unwrap();
        let m = grant(&kv, &keys, &alice, Role::Operator).await.unwrap();
        assert_eq!(m.bindings.len(), 2);
        assert_eq!(m.bindings[&alice], Role::Operator);
        revoke(&kv, &keys, &alice).await.unwrap();
        let e = revoke(&kv, &keys, &alice).await.unwrap_err().to_string();
        assert!(e.contains("user:alice has no role"), "{e}");
        let t = tenant("blue", &["p1"], &["user:alice"]);
        put_tenant(&kv, &keys, &t).await.unwrap();
        let v = AuthView::load(&kv, &keys).await.unwrap();
        assert_eq!(v.tenants.len(), 1);
        assert_eq!(v.roles.bindings.len(), 1);
        delete_tenant(&kv, &keys, &TenantName::new("blue").unwrap())
            .await
            .unwrap();
        assert!(delete_tenant(&kv, &keys, &TenantName::new("blue").unwrap())
            .await
            .is_err());
    }
}
