/*
 * diskstest.c: the DISKS header field: recorded from a domain's local
 * disks, recorded again in the same length, read back for people
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <config.h>

#include <sys/stat.h>

#include "testutil.h"
#include "scratch.h"
#include "kvmsave_preflight.h"


static char *
domainWithDisk(const char *path)
{
    return g_strdup_printf(
        "<domain type='qemu'><name>d</name>"
        "<uuid>0f2a1c5e-7d3b-4e8f-9a61-2b4c6d8e0a11</uuid>"
        "<memory unit='KiB'>262144</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        "<devices>"
        "<disk type='file' device='disk'><source file='%s'/>"
        "<target dev='vda' bus='virtio'/></disk>"
        "<disk type='network' device='disk'><source protocol='nbd' name='x'>"
        "<host name='localhost' port='10809'/></source>"
        "<target dev='vdb' bus='virtio'/></disk>"
        "</devices></domain>", path);
}


START_TEST(test_local_disks_recorded_and_described)
{
    g_autofree char *disk = scratchPath("disk a.img");
    g_autofree char *xml = domainWithDisk(disk);
    g_autofree char *disks = NULL;
    g_autofree char *text = NULL;
    g_autofree char *size = NULL;
    struct stat sb;

    fileWrite(disk, "0123456789", 10);
    ck_assert_int_eq(stat(disk, &sb), 0);
    ck_assert_int_eq(kvmsavePreflightRecordDisks(xml, &disks), 0);
    ck_assert_ptr_nonnull(disks);
    /* One line: the network disk is not a local one. */
    ck_assert_ptr_null(strchr(disks, '\n') ? strchr(strchr(disks, '\n') + 1, '\n') : NULL);
    ck_assert(g_str_has_prefix(disks, "vda "));
    ck_assert_ptr_nonnull(strstr(disks, "disk%20a.img"));

    text = kvmsavePreflightDescribeDisks(disks);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "vda"));
    ck_assert_ptr_nonnull(strstr(text, disk));
    ck_assert_ptr_nonnull(strstr(text, "10 bytes"));
    size = g_strdup_printf("inode %llu", (unsigned long long) sb.st_ino);
    ck_assert_ptr_nonnull(strstr(text, size));
}
END_TEST


START_TEST(test_recorded_again_in_the_same_length)
{
    g_autofree char *disk = scratchPath("again.img");
    g_autofree char *xml = domainWithDisk(disk);
    g_autofree char *disks = NULL;
    g_autofree char *again = NULL;
    g_autofree char *gone = NULL;
    g_autofree char *text = NULL;

    fileWrite(disk, "x", 1);
    ck_assert_int_eq(kvmsavePreflightRecordDisks(xml, &disks), 0);
    /* The disk grew: a new record, as long as the old one. */
    fileWrite(disk, "a longer content", 16);
    ck_assert_int_eq(kvmsavePreflightRecordDisksAgain(disks, &again), 0);
    ck_assert_uint_eq(strlen(again), strlen(disks));
    ck_assert_str_ne(again, disks);
    text = kvmsavePreflightDescribeDisks(again);
    ck_assert_ptr_nonnull(strstr(text, "16 bytes"));

    /* A disk that cannot be seen keeps its record. */
    ck_assert_int_eq(unlink(disk), 0);
    ck_assert_int_eq(kvmsavePreflightRecordDisksAgain(again, &gone), 0);
    ck_assert_str_eq(gone, again);
}
END_TEST


START_TEST(test_corrupt_field_is_refused)
{
    g_autofree char *again = NULL;

    ck_assert_ptr_null(kvmsavePreflightDescribeDisks("vda 10 notatime 5 /x"));
    ck_assert_ptr_null(kvmsavePreflightDescribeDisks("vda 10 1.2 5"));
    ck_assert_int_eq(kvmsavePreflightRecordDisksAgain("vda 10 1.2 x /x", &again), -1);
    KT_ASSERT_ERROR(VIR_ERR_INTERNAL_ERROR, "invalid disk record");
}
END_TEST


START_TEST(test_no_local_disk_records_nothing)
{
    g_autofree char *disks = NULL;

    ck_assert_int_eq(kvmsavePreflightRecordDisks(
        "<domain type='qemu'><name>d</name>"
        "<memory unit='KiB'>262144</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>",
        &disks), 0);
    ck_assert_ptr_null(disks);
}
END_TEST


static Suite *
disksSuite(void)
{
    Suite *s = suite_create("disks");
    TCase *tc = ktTCase("DISKS field", 10);

    tcase_add_unchecked_fixture(tc, scratchSetup, scratchTeardown);
    tcase_add_test(tc, test_local_disks_recorded_and_described);
    tcase_add_test(tc, test_recorded_again_in_the_same_length);
    tcase_add_test(tc, test_corrupt_field_is_refused);
    tcase_add_test(tc, test_no_local_disk_records_nothing);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    return ktRunSuite(disksSuite);
}
