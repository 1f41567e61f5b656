/*
 * kvmsave_feed.h: the threads that feed a restore's QEMU the image's
 * streams, chunk by checked chunk
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "internal.h"
#include "kvmsave_imagereader.h"
#include "kvmsave_job.h"

typedef struct _kvmsaveFeed kvmsaveFeed;

/* Feeders for the streams of the image @reader reads (as many as its
 * header says), counting progress in @job. */
kvmsaveFeed *kvmsaveFeedNew(kvmsaveImageReader *reader, kvmsaveJob *job);
size_t kvmsaveFeedStreams(kvmsaveFeed *feed);

/* Feed stream @i into @fd (taken). With several streams each feeder reads
 * its own stream of the image, and the first one to fail kills @dom's
 * QEMU (@qemuPidfd, or -1; the caller's, kept open until the feeders are
 * freed): QEMU 7.2 never notices a multifd channel that ended. */
int kvmsaveFeedStart(kvmsaveFeed *feed, size_t i, int fd, virDomainPtr dom,
                     int qemuPidfd);

/* Feed the single stream into the FIFO @fifo once a reader opens it,
 * after the @headLen bytes of @head. Its last byte is held back until the
 * image's totals are checked and the job committed, so that QEMU cannot
 * finish loading before; any failure first kills the QEMU of guest @uuid
 * on @inner (QEMU takes a stream that ends early in its last section
 * for a whole one) and drops that stop's events, as stock libvirt sends
 * none for a restore that failed. */
void kvmsaveFeedStartFifo(kvmsaveFeed *feed, const char *fifo,
                          const unsigned char *head, size_t headLen,
                          virConnectPtr inner, const unsigned char *uuid);

/* Wait until every feeder has sent its stream (0), one failed (-1) or
 * the job was cancelled (-2). */
int kvmsaveFeedWait(kvmsaveFeed *feed);

/* Join the feeders in order, telling them to stop first when @stop;
 * returns -1 at the first that failed (kvmsaveFeedFree joins the rest). */
int kvmsaveFeedJoin(kvmsaveFeed *feed, bool stop);

/* Stop, join and free the feeders. Returns the error of the one that
 * failed first (a bad chunk explains QEMU's failure better than QEMU
 * does; the others' broken pipes follow from it), NULL if none did;
 * *@writing: it failed writing to QEMU, not reading the image. */
virErrorPtr kvmsaveFeedFree(kvmsaveFeed *feed, bool *writing);
