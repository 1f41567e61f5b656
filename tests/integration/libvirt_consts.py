"""libvirt's lifecycle event numbers (include/libvirt/libvirt-domain.h)
and error codes (virerror.h), so the test process need not import libvirt."""

VIR_ERR_OPERATION_FAILED = 9
VIR_ERR_OPERATION_INVALID = 55

STARTED = 2
SUSPENDED = 3
RESUMED = 4
STOPPED = 5
SHUTDOWN = 6

STARTED_BOOTED = 0
STARTED_RESTORED = 2

SUSPENDED_PAUSED = 0
SUSPENDED_RESTORED = 5

RESUMED_UNPAUSED = 0
RESUMED_FROM_SNAPSHOT = 2

STOPPED_DESTROYED = 2
STOPPED_SAVED = 4
STOPPED_FAILED = 5
