//! [`Devices`]: listing, renaming and deleting the devices of an account (the rows
//! [`AccountStore`] keeps). Deleting a device also deletes its access token (database cascade),
//! its encryption keys and waiting to-device messages, and records a device-list change.

use ruma::api::client::device::Device;
use ruma::{DeviceId, OwnedDeviceId, UserId};

use super::keys::Keys;
use crate::store::StoreError;
use crate::store::accounts::{AccountStore, DeviceRecord};

/// The devices of accounts. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Devices {
    accounts: AccountStore,
    keys: Keys,
}

impl Devices {
    pub(super) fn new(accounts: AccountStore, keys: Keys) -> Self {
        Self { accounts, keys }
    }

    /// Every device of `user`.
    pub async fn list(&self, user: &UserId) -> Result<Vec<Device>, StoreError> {
        let records = self.accounts.devices(user.localpart()).await?;
        Ok(records.into_iter().map(device).collect())
    }

    /// One device of `user`.
    pub async fn get(&self, user: &UserId, id: &DeviceId) -> Result<Option<Device>, StoreError> {
        let record = self.accounts.device(user.localpart(), id.as_str()).await?;
        Ok(record.map(device))
    }

    /// Sets the display name of a device of `user`; `false` when there is no such device.
    pub async fn rename(
        &self,
        user: &UserId,
        id: &DeviceId,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.accounts
            .set_device_display_name(user.localpart(), id.as_str(), display_name)
            .await
    }

    /// Deletes devices of `user` (unknown IDs are skipped) with their access tokens, keys and
    /// to-device messages.
    pub async fn delete(&self, user: &UserId, ids: &[OwnedDeviceId]) -> Result<(), StoreError> {
        let names: Vec<&str> = ids.iter().map(|d| d.as_str()).collect();
        self.accounts
            .delete_devices(user.localpart(), &names)
            .await?;
        self.keys.devices_deleted(user, ids).await
    }
}

fn device(record: DeviceRecord) -> Device {
    let mut d = Device::new(record.device_id.into());
    d.display_name = record.display_name;
    d
}
