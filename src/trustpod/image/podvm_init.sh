#!/bin/sh
# trustpod pod VM init (PID 1 after the initramfs switched to the verified root): mounts, the
# network of QEMU user-mode networking, the cidata userdata, then the pod VM boot step which
# becomes `trustpod agent serve`.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "trustpod-init: $*" > /dev/console; }
# --variant=apt has no mount/ip/poweroff binaries: Debian's busybox provides the applets
for applet in mount ip poweroff hostname; do
    eval "$applet() { busybox $applet \"\$@\"; }"
done
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /tmp /media/cidata
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
hostname podvm
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi
for dev in /dev/sr0 /dev/vdb /dev/vdc; do
    [ -b "$dev" ] && mount -t iso9660 -o ro "$dev" /media/cidata 2>/dev/null && break
done
say "up in $(cut -d' ' -f1 /proc/uptime) s; python3 $(python3 -c 'import sys; print(sys.version.split()[0])')"
if [ -f /media/cidata/vcek.der ]; then
    # the qemu provider's emulated Azure CVM: no IMDS THIM in the VM, the cidata carries the
    # emulated VCEK (its reports verify only with the KBS's insecure_emulated_roots)
    say "cidata carries a VCEK (EMULATED platform): az-snp-vtpm reads it instead of IMDS"
    printf '[attester_settings]\nvcek_path = "/media/cidata/vcek.der"\n' \
        >> /usr/share/trustpod/pod-vm/guest.toml
fi
if [ -f /media/cidata/user-data ]; then
    say "userdata found; starting the forwarder and the agent"
    mkdir -p /run/peerpod
    python3 -m trustpod.image.apf --listen 10.0.2.15:15150 --to /run/peerpod/agent.sock &
    python3 -m trustpod.pod.guest_boot --image /usr/share/trustpod/pod-vm
    say "agent exited ($?)"
else
    say "no cidata userdata; nothing to run"
fi
say "powering off"
poweroff -f
