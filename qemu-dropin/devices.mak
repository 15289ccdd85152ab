# The devices of the QEMU-with-coro9p build (configure
# --without-default-devices --with-devices-x86_64=coro9p). The pc machine
# (i440FX) creates VGA, a parallel port, a NIC (e1000) and vmport itself
# unless -nodefaults says otherwise, and qos-test does not pass it: those
# stay. virtio-9p-pci is the device under test; virtio-net-pci is there for
# guests that want a network.
CONFIG_I440FX=y
CONFIG_VGA_PCI=y
CONFIG_PARALLEL=y
CONFIG_E1000_PCI=y
CONFIG_VMPORT=y
CONFIG_VMMOUSE=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_9P=y
CONFIG_VIRTIO_NET=y
