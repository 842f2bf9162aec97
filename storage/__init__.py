"""The blob store: content-addressed files on the storage volume, written crash-safely."""
