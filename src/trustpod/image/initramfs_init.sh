#!/bin/sh
# trustpod pod VM initramfs: load modules, open the root as dm-verity with roothash= from the
# kernel command line, mount it read-only under a tmpfs overlay, switch to it. Any mismatch
# stops the boot with a console message and powers off.
export PATH=/bin:/sbin
say() { echo "trustpod-initramfs: $*"; }
stop() {
    say "BOOT STOPPED: $*"
    say "the root filesystem is not the measured one; refusing to run it, powering off"
    sleep 1
    poweroff -f
    exit 1
}
mkdir -p /proc /sys /dev /run /tmp /lower /rw /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/trustpod/modules); do
    insmod "/lib/modules/$m" || stop "insmod $m failed"
done
roothash=""; data=""; hashdev=""; opts=""; check="full"; init="/sbin/init"
for w in $(cat /proc/cmdline); do
    case "$w" in
        roothash=*) roothash="${w#*=}" ;;
        systemd.verity_root_data=*) data="${w#*=}" ;;
        systemd.verity_root_hash=*) hashdev="${w#*=}" ;;
        systemd.verity_root_options=*) opts="${w#*=}" ;;
        trustpod.verity_check=*) check="${w#*=}" ;;
        init=*) init="${w#*=}" ;;
    esac
done
[ -n "$roothash" ] || stop "no roothash= on the kernel command line"
[ -n "$data" ] && [ -n "$hashdev" ] || stop "no systemd.verity_root_data=/_hash= devices"
flags=""
old_ifs="$IFS"; IFS=","
for o in $opts; do
    case "$o" in
        panic-on-corruption) flags="$flags --panic-on-corruption" ;;
        restart-on-corruption) flags="$flags --restart-on-corruption" ;;
        ignore-zero-blocks) flags="$flags --ignore-zero-blocks" ;;
        check-at-most-once) flags="$flags --check-at-most-once" ;;
        ignore-corruption) stop "ignore-corruption is refused" ;;
        superblock=false) stop "superblock=false is not supported by this initramfs" ;;
    esac
done
IFS="$old_ifs"
n=0
while [ ! -b "$data" ] || [ ! -b "$hashdev" ]; do
    n=$((n + 1))
    [ "$n" -gt 200 ] && stop "root devices $data / $hashdev did not appear"
    sleep 0.1
done
mkdir -p /run/cryptsetup
say "opening $data as dm-verity (hash device $hashdev) with roothash=$roothash"
# shellcheck disable=SC2086
veritysetup open "$data" root "$hashdev" "$roothash" $flags || stop "veritysetup open failed"
if [ "$check" = "full" ]; then
    say "reading the whole root through dm-verity (trustpod.verity_check=full)"
    dd if=/dev/mapper/root of=/dev/null bs=1M 2>/dev/null || \
        stop "dm-verity: the root filesystem does not match roothash=$roothash"
fi
mount -o ro /dev/mapper/root /lower || stop "cannot mount the verified root"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || \
    stop "cannot mount the overlay"
say "root verified (roothash=$roothash); starting $init"
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot "$init"
