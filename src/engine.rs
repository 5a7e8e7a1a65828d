//! The engine handle: a snapshot compiled into the index, loaded, exported and changed atomically.

use std::collections::BTreeMap;

use crate::error::{Error, ErrorCode, Result};
use crate::index::{DeviceData, DeviceSlot, Index, Marks, OrgRec, OrgSlot, Touched, Undo, UserRec, UserSlot};
use crate::model::Perms;
use crate::snapshot::{DeviceDoc, Id, MembershipDoc, OrgDoc, RoleName, SafeInt, SnapshotDoc, UserDoc, SNAPSHOT_FORMAT};

/// A loaded snapshot that answers permission questions (SPEC §3) and applies deltas (SPEC §4.2).
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) ix: Index,
    pub(crate) revision: u64,
    pub(crate) viewer: Option<Id>,
    pub(crate) issued_at: Option<u64>,
    pub(crate) expires_at: Option<u64>,
    /// The `expiresAt` of the last signed snapshot or delta accepted; `None` when none was.
    pub(crate) signed_expires_at: Option<u64>,
}

/// An applied batch of changes, with what reverts it.
#[derive(Debug)]
pub(crate) struct Batch {
    marks: Marks,
    undo: Vec<Undo>,
    touched: Touched,
}

/// One change to the stored facts (the vocabulary of deltas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    PutOrg(&'a OrgDoc),
    PutUser(&'a UserDoc),
    PutMembership(&'a MembershipDoc),
    PutDevice(&'a DeviceDoc),
    RemoveOrg(&'a str),
    RemoveUser(&'a str),
    RemoveDevice(&'a str),
    RemoveMembership(&'a str, &'a str),
}

/// Converts a JSON role table into closed permission sets.
pub(crate) fn role_table<I: AsRef<str>, S>(org: &OrgDoc<I, S>) -> Result<Option<crate::index::RoleTable>> {
    let Some(roles) = &org.roles else { return Ok(None) };
    let mut table = BTreeMap::new();
    for (role, list) in roles {
        let perms = Perms::parse_list(list).map_err(|bad| {
            Error::new(
                ErrorCode::UnknownPermission,
                format!(
                    "unknown permission `{}` in role `{role}` of org `{}`",
                    crate::snapshot::truncate_for_message(&bad),
                    org.id.as_ref()
                ),
            )
        })?;
        table.insert(role.clone(), perms);
    }
    Ok(Some(table))
}

impl Engine {
    /// Loads a snapshot from JSON text (SPEC §4.1), checking schema and invariants.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_doc(SnapshotDoc::parse_borrowed(text)?)
    }

    /// Loads a parsed snapshot, checking invariants I1–I3 and duplicate ids.
    pub fn from_doc<I: AsRef<str>, S: AsRef<str> + Into<String>>(doc: SnapshotDoc<I, S>) -> Result<Self> {
        let mut ix = Index::new_bulk(doc.orgs.len(), doc.users.len(), doc.devices.len());
        for org in &doc.orgs {
            let o = ix.intern_org(org.id.as_ref());
            let rec = org_rec(&mut ix, org)?;
            if ix.set_org(o, Some(rec)).is_some() {
                return Err(Error::new(ErrorCode::DuplicateId, format!("duplicate org id `{}`", org.id.as_ref())));
            }
        }
        for user in doc.users {
            let u = ix.intern_user(user.id.as_ref());
            let rec = UserRec { email: user.email.into(), name: user.name.into(), status: user.status };
            if ix.set_user(u, Some(rec)).is_some() {
                return Err(Error::new(ErrorCode::DuplicateId, format!("duplicate user id `{}`", user.id.as_ref())));
            }
        }
        for m in &doc.memberships {
            let u = ix.intern_user(m.user.as_ref());
            let o = ix.intern_org(m.org.as_ref());
            if ix.set_membership(u, o, Some(m.role.clone())).is_some() {
                return Err(Error::new(
                    ErrorCode::DuplicateId,
                    format!("duplicate membership of user `{}` in org `{}`", m.user.as_ref(), m.org.as_ref()),
                ));
            }
        }
        for dev in doc.devices {
            let d = ix.intern_device(dev.id.as_ref());
            let org = ix.intern_org(dev.org.as_ref());
            let owner = dev.owner.as_ref().map(|o| ix.intern_user(o.as_ref()));
            if ix.set_device(d, Some(DeviceData { name: dev.name.into(), org, owner })).is_some() {
                return Err(Error::new(ErrorCode::DuplicateId, format!("duplicate device id `{}`", dev.id.as_ref())));
            }
        }
        ix.finish_bulk();
        ix.settle(&Touched { all: true, ..Touched::default() })?;
        if let Some(v) = &doc.viewer {
            let v = v.as_ref();
            if ix.user_ids.get(v).and_then(|u| ix.user(u)).is_none() {
                return Err(Error::new(
                    ErrorCode::UnknownReference,
                    format!("unknown viewer `{v}`: not a user of the snapshot"),
                ));
            }
        }
        Ok(Self {
            ix,
            revision: doc.revision.0,
            viewer: doc.viewer.map(|v| Id::trusted(v.as_ref().to_owned())),
            issued_at: doc.issued_at.map(|s| s.0),
            expires_at: doc.expires_at.map(|s| s.0),
            signed_expires_at: None,
        })
    }

    /// The snapshot's revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The viewer a projected snapshot was made for, `None` for a full snapshot.
    pub fn viewer(&self) -> Option<&str> {
        self.viewer.as_ref().map(Id::as_str)
    }

    /// Unix seconds when the snapshot was issued, if it says.
    pub fn issued_at(&self) -> Option<u64> {
        self.issued_at
    }

    /// The document's `expiresAt`: from the snapshot, then from each applied delta that carries
    /// one. Not a trust statement (an unsigned snapshot may say anything): see
    /// [`Engine::signed_expires_at`].
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// Unix seconds until which the engine's state is vouched for: the `expiresAt` of the last
    /// signed snapshot or delta it accepted (SPEC §6 `expiresAt`). `None` for an engine loaded
    /// by plain [`Engine::from_json`], or a signed one whose payloads carry no expiry. A signed
    /// delta without `expiresAt` keeps the previous value; unsigned deltas never change it.
    pub fn signed_expires_at(&self) -> Option<u64> {
        self.signed_expires_at
    }

    /// Counts of (orgs, users, memberships, devices).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (self.ix.org_count, self.ix.user_count, self.ix.membership_count, self.ix.device_count)
    }

    /// The snapshot as its JSON document: every list in ascending id order, defaults explicit
    /// (the lists of [`Engine::snapshot_view`], so both write the same snapshot).
    pub fn to_doc(&self) -> SnapshotDoc {
        let ix = &self.ix;
        let view = self.snapshot_view();
        let slots = view.slots();
        let orgs = slots.orgs.iter().filter_map(|&o| self.org_doc(o)).collect();
        let users = slots.users.iter().filter_map(|&u| self.user_doc(u)).collect();
        let memberships = slots
            .memberships
            .iter()
            .filter_map(|&(u, o)| ix.mem(u, o).map(|m| self.membership_doc(u, o, &m.role)))
            .collect();
        let devices = slots.devices.iter().filter_map(|&d| self.device_doc(d)).collect();
        SnapshotDoc {
            format: SNAPSHOT_FORMAT.to_owned(),
            revision: SafeInt(self.revision),
            viewer: self.viewer.clone(),
            issued_at: self.issued_at.map(SafeInt),
            expires_at: self.expires_at.map(SafeInt),
            orgs,
            users,
            memberships,
            devices,
        }
    }

    /// The snapshot as JSON text (the document of [`Engine::to_doc`], written straight from the
    /// index).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.snapshot_view()).unwrap_or_default()
    }

    /// An org as a document, by id.
    pub fn org_doc_by_id(&self, id: &str) -> Option<OrgDoc> {
        self.ix.org_ids.get(id).and_then(|o| self.org_doc(o))
    }

    /// A user as a document, by id.
    pub fn user_doc_by_id(&self, id: &str) -> Option<UserDoc> {
        self.ix.user_ids.get(id).and_then(|u| self.user_doc(u))
    }

    /// A device as a document, by id.
    pub fn device_doc_by_id(&self, id: &str) -> Option<DeviceDoc> {
        self.ix.dev_ids.get(id).and_then(|d| self.device_doc(d))
    }

    /// A membership as a document, by user and org.
    pub fn membership_doc_by_id(&self, user: &str, org: &str) -> Option<MembershipDoc> {
        let (u, o) = (self.ix.user_ids.get(user)?, self.ix.org_ids.get(org)?);
        self.ix.mem(u, o).map(|m| self.membership_doc(u, o, &m.role))
    }

    /// The memberships of a user, as (org, role), ascending by org.
    pub fn memberships_of(&self, user: &str) -> Vec<(String, String)> {
        let Some(u) = self.ix.user_ids.get(user) else { return Vec::new() };
        let mut orgs: Vec<OrgSlot> = self.ix.mems(u).iter().map(|m| m.org).collect();
        self.ix.org_ids.sort(&mut orgs);
        orgs.into_iter()
            .filter_map(|o| self.ix.mem(u, o).map(|m| (self.ix.org_name(o).to_owned(), m.role.as_str().to_owned())))
            .collect()
    }

    /// The user with this email (compared case-insensitively).
    pub fn user_by_email(&self, email: &str) -> Option<UserDoc> {
        self.user_slot_by_email(email).and_then(|u| self.user_doc(u))
    }

    /// The slot of the user with this email (compared case-insensitively).
    pub(crate) fn user_slot_by_email(&self, email: &str) -> Option<UserSlot> {
        self.ix.user_slots().find(|&u| self.ix.user(u).is_some_and(|r| r.email.eq_ignore_ascii_case(email)))
    }

    pub(crate) fn org_doc(&self, o: OrgSlot) -> Option<OrgDoc> {
        let rec = self.ix.org(o)?;
        Some(OrgDoc {
            id: Id::trusted(self.ix.org_name(o).to_owned()),
            name: rec.name.clone(),
            parent: rec.parent.map(|p| Id::trusted(self.ix.org_name(p).to_owned())),
            plan: rec.plan,
            suspended: rec.suspended,
            roles: rec.roles.as_ref().map(|t| {
                // Inserts rather than `collect`: collecting into a BTreeMap pulls in a stable sort.
                let mut table = BTreeMap::new();
                for (k, v) in t {
                    table.insert(k.clone(), v.names().into_iter().map(str::to_owned).collect());
                }
                table
            }),
        })
    }

    pub(crate) fn user_doc(&self, u: UserSlot) -> Option<UserDoc> {
        let rec = self.ix.user(u)?;
        Some(UserDoc {
            id: Id::trusted(self.ix.user_name(u).to_owned()),
            email: rec.email.clone(),
            name: rec.name.clone(),
            status: rec.status,
        })
    }

    pub(crate) fn membership_doc(&self, u: UserSlot, o: OrgSlot, role: &RoleName) -> MembershipDoc {
        MembershipDoc {
            user: Id::trusted(self.ix.user_name(u).to_owned()),
            org: Id::trusted(self.ix.org_name(o).to_owned()),
            role: role.clone(),
        }
    }

    pub(crate) fn device_doc(&self, d: DeviceSlot) -> Option<DeviceDoc> {
        let dev = self.ix.device(d)?;
        Some(DeviceDoc {
            id: Id::trusted(self.ix.device_name(d).to_owned()),
            name: dev.name.clone(),
            org: Id::trusted(self.ix.org_name(dev.org).to_owned()),
            owner: dev.owner.map(|u| Id::trusted(self.ix.user_name(u).to_owned())),
        })
    }

    // INVARIANT: a batch either settles without error and stays, or is reverted exactly — every
    // undo step replayed in reverse, ids first seen by the batch forgotten, derived data
    // re-settled — so no caller ever sees a half-applied batch.
    /// Applies `changes` in order, then checks invariants on the result. On any error the
    /// engine is restored exactly (ids first seen by the batch are forgotten again).
    pub(crate) fn apply_changes(&mut self, changes: &[Change<'_>]) -> Result<()> {
        self.apply_batch(changes).map(|_| ())
    }

    /// Applies a batch and keeps what is needed to revert it.
    pub(crate) fn apply_batch(&mut self, changes: &[Change<'_>]) -> Result<Batch> {
        let mut batch =
            Batch { marks: self.ix.marks(), undo: Vec::with_capacity(changes.len()), touched: Touched::default() };
        let mut result = Ok(());
        for change in changes {
            result = self.apply_change(change, &mut batch.undo, &mut batch.touched);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.ix.settle(&batch.touched);
        }
        match result {
            Ok(()) => Ok(batch),
            Err(e) => {
                self.revert(batch);
                Err(e)
            }
        }
    }

    /// Reverts an applied batch exactly.
    pub(crate) fn revert(&mut self, batch: Batch) {
        for step in batch.undo.into_iter().rev() {
            self.ix.undo(step);
        }
        self.ix.truncate_to(batch.marks);
        // The state is the previous valid one again: re-deriving cannot fail.
        let _ = self.ix.settle(&batch.touched);
    }

    /// Runs `f` on the engine as it would be after `changes`, then restores it exactly.
    pub(crate) fn with_changes<R>(&mut self, changes: &[Change<'_>], f: impl FnOnce(&Engine) -> R) -> Result<R> {
        let batch = self.apply_batch(changes)?;
        let out = f(self);
        self.revert(batch);
        Ok(out)
    }

    fn apply_change(&mut self, change: &Change<'_>, undo: &mut Vec<Undo>, t: &mut Touched) -> Result<()> {
        let ix = &mut self.ix;
        match change {
            Change::PutOrg(doc) => {
                let o = ix.intern_org(doc.id.as_str());
                let rec = org_rec(ix, doc)?;
                let old = ix.set_org(o, Some(rec));
                undo.push(Undo::Org(o, old));
                t.orgs_changed = true;
            }
            Change::PutUser(doc) => {
                let u = ix.intern_user(doc.id.as_str());
                let old = ix.set_user(u, Some(user_rec(doc)));
                undo.push(Undo::User(u, old));
            }
            Change::PutMembership(doc) => {
                let u = ix.intern_user(doc.user.as_str());
                let o = ix.intern_org(doc.org.as_str());
                let old = ix.set_membership(u, o, Some(doc.role.clone()));
                undo.push(Undo::Membership(u, o, old));
                t.memberships.push((u, o));
            }
            Change::PutDevice(doc) => {
                let d = ix.intern_device(doc.id.as_str());
                let data = device_data(ix, doc);
                let old = ix.set_device(d, Some(data));
                undo.push(Undo::Device(d, old));
                t.devices.push(d);
            }
            Change::RemoveOrg(id) => {
                let o = ix.org_ids.get(id).filter(|o| ix.org_present(*o)).ok_or_else(|| unknown("org", id))?;
                let old = ix.set_org(o, None);
                undo.push(Undo::Org(o, old));
                t.orgs_changed = true;
                t.orgs_removed.push(o);
            }
            Change::RemoveUser(id) => {
                let u = ix.user_ids.get(id).filter(|u| ix.user(*u).is_some()).ok_or_else(|| unknown("user", id))?;
                let old = ix.set_user(u, None);
                undo.push(Undo::User(u, old));
                t.users_removed.push(u);
            }
            Change::RemoveDevice(id) => {
                let d = ix.dev_ids.get(id).filter(|d| ix.device(*d).is_some()).ok_or_else(|| unknown("device", id))?;
                let old = ix.set_device(d, None);
                undo.push(Undo::Device(d, old));
            }
            Change::RemoveMembership(user, org) => {
                let found = match (ix.user_ids.get(user), ix.org_ids.get(org)) {
                    (Some(u), Some(o)) if ix.mem(u, o).is_some() => Some((u, o)),
                    _ => None,
                };
                let (u, o) = found.ok_or_else(|| {
                    Error::new(
                        ErrorCode::UnknownReference,
                        format!("unknown membership of user `{user}` in org `{org}`"),
                    )
                })?;
                let old = ix.set_membership(u, o, None);
                undo.push(Undo::Membership(u, o, old));
                t.memberships.push((u, o));
            }
        }
        Ok(())
    }
}

fn unknown(kind: &str, id: &str) -> Error {
    Error::new(ErrorCode::UnknownReference, format!("unknown {kind} `{id}`"))
}

fn org_rec<I: AsRef<str>, S: AsRef<str>>(ix: &mut Index, doc: &OrgDoc<I, S>) -> Result<OrgRec> {
    let roles = role_table(doc)?;
    Ok(OrgRec {
        name: doc.name.as_ref().to_owned(),
        parent: doc.parent.as_ref().map(|p| ix.intern_org(p.as_ref())),
        plan: doc.plan,
        suspended: doc.suspended,
        roles,
    })
}

fn user_rec(doc: &UserDoc) -> UserRec {
    UserRec { email: doc.email.clone(), name: doc.name.clone(), status: doc.status }
}

fn device_data(ix: &mut Index, doc: &DeviceDoc) -> DeviceData {
    DeviceData {
        name: doc.name.clone(),
        org: ix.intern_org(doc.org.as_str()),
        owner: doc.owner.as_ref().map(|o| ix.intern_user(o.as_str())),
    }
}
