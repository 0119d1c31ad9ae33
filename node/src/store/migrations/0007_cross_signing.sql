-- Cross-signing (keys/device_signing/upload, keys/signatures/upload): each user's cross-signing
-- keys and the signatures uploaded for keys after the fact. Key and signature changes are
-- device-list changes (device_list_changes, 0004_userdata.sql).

-- The latest cross-signing key of each user and usage ('master', 'self_signing',
-- 'user_signing'): its public key (unpadded base64, the name of its `ed25519:` key ID) and the
-- CrossSigningKey object as uploaded, signatures included, in canonical JSON.
CREATE TABLE cross_signing_keys (
    user_id    TEXT NOT NULL,
    usage      TEXT NOT NULL,
    public_key TEXT NOT NULL,
    json       TEXT NOT NULL,
    stream     INTEGER NOT NULL,
    PRIMARY KEY (user_id, usage)
);

-- Signatures uploaded through keys/signatures/upload, each checked against the signer's key
-- when uploaded: of target_user's key target_key (a device ID, or the public key of their master
-- key) by signer_user's key signer_key (`ed25519:<device ID or public key>`). keys/query merges
-- them into the signed object.
CREATE TABLE key_signatures (
    target_user TEXT NOT NULL,
    target_key  TEXT NOT NULL,
    signer_user TEXT NOT NULL,
    signer_key  TEXT NOT NULL,
    signature   TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key)
);
CREATE INDEX key_signatures_by_signer ON key_signatures (signer_user, signer_key);
