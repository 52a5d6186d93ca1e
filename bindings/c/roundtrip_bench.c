/*
 * roundtrip_bench.c: poll + complete round trips through libtaskerworker.so
 * from one C thread, the floor under every foreign binding (cgo entry and
 * exit, JSON out and in, the FFI channel).
 *
 *   roundtrip_bench CONFIG COUNT [BATCH]     (DATABASE_URL from the environment)
 *
 * CONFIG is worker.toml text or a path; the queue must then hold at least
 * COUNT steps. CONFIG "memory" runs against the library's DB-free benchmark
 * source instead (taskerworker_bench_start(COUNT), see
 * bindings/c/taskerworker_bench.h), which needs a library built with
 * -tags ffibench; at the end it checks that exactly COUNT completions were
 * delivered (exit 1 if not).
 *
 * BATCH (default 1) is how many events one call moves:
 *  - 1: taskerworker_poll + taskerworker_complete per event. Only round trips
 *    are timed (poll returned an event, a result was built from its ids,
 *    complete accepted it, the event string was freed); a poll that finds
 *    the dispatch channel empty is counted but not timed.
 *  - > 1 (at most 4096): taskerworker_poll_batch of up to BATCH events (never
 *    more than are still to do), one ids string and one results array built
 *    from them, taskerworker_complete_batch (events answered RETRY_LATER are
 *    sent again, inside the timing). A batch's time divided by its events is
 *    one sample, so the percentiles are over batches; events/s is events
 *    over the total timed time.
 *
 * Prints one line (all values after path are numbers):
 *   RESULT path=c|c-batch batch=N n=... p50_us=... p90_us=... p99_us=... mean_us=... events_per_s=... empty_polls=... batches=...
 * preceded by "INFO source=queue" or "INFO source=memory delivered=N".
 *
 * bindings/bench_test.go (BenchmarkRoundTrip/c) builds and runs it against
 * the product library with CONFIG COUNT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "taskerworker.h"
#include "taskerworker_bench.h"

/* Weak, so the program still links against the product library, which does
 * not have them: they are NULL there, and CONFIG "memory" says so. */
#pragma weak taskerworker_bench_start
#pragma weak taskerworker_bench_stop

#define MAX_BATCH 4096
#define ID_MAX 64
#define RESULT_MAX 512

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
	long long x = *(const long long *)a, y = *(const long long *)b;
	return (x > y) - (x < y);
}

static void die(const char *what, int rc) {
	char *msg = taskerworker_last_error();
	fprintf(stderr, "%s: code %d: %s\n", what, rc, msg ? msg : "(no message)");
	taskerworker_free(msg);
	exit(1);
}

/* Copy the string value of "key":"..." found in json at or after *from into
 * out (size n) and move *from past it. */
static int field_from(const char **from, const char *key, char *out, size_t n) {
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":\"", key);
	const char *p = strstr(*from, pat);
	if (!p) return -1;
	p += strlen(pat);
	const char *q = strchr(p, '"');
	if (!q || (size_t)(q - p) >= n) return -1;
	memcpy(out, p, q - p);
	out[q - p] = 0;
	*from = q + 1;
	return 0;
}

static int field(const char *json, const char *key, char *out, size_t n) { return field_from(&json, key, out, n); }

static int format_result(char *out, size_t n, const char *step) {
	return snprintf(out, n,
	                "{\"step_uuid\":\"%s\",\"success\":true,\"result\":null,\"status\":\"completed\","
	                "\"metadata\":{\"execution_time_ms\":0,\"retryable\":false}}",
	                step);
}

/* One polled batch: the ids and steps of its events. */
struct batch {
	int n;
	char (*id)[ID_MAX];
	char (*step)[ID_MAX];
	char *ids;     /* "id\nid\n..." */
	char *results; /* "[{...},{...}]" */
	int *retry;    /* indexes answered RETRY_LATER */
};

/* Build b->ids and b->results from the events listed in idx (count k). */
static void build(struct batch *b, const int *idx, int k) {
	char *ip = b->ids, *rp = b->results;
	*rp++ = '[';
	for (int j = 0; j < k; j++) {
		int i = idx[j];
		size_t l = strlen(b->id[i]);
		memcpy(ip, b->id[i], l);
		ip += l;
		*ip++ = '\n';
		if (j > 0) *rp++ = ',';
		rp += format_result(rp, RESULT_MAX, b->step[i]);
	}
	*ip = 0;
	*rp++ = ']';
	*rp = 0;
}

/* Complete the batch's events, sending again those answered RETRY_LATER. */
static void complete_all(struct batch *b) {
	static int all[MAX_BATCH];
	int k = b->n;
	for (int i = 0; i < k; i++) all[i] = i;
	const int *idx = all;
	for (;;) {
		build(b, idx, k);
		char *outcomes = NULL;
		int rc = taskerworker_complete_batch(b->ids, b->results, &outcomes);
		if (rc == TASKERWORKER_OK) return;
		if (rc != TASKERWORKER_PARTIAL) die("taskerworker_complete_batch", rc);
		/* {"code":N...} per event, in order */
		int r = 0;
		const char *p = outcomes;
		for (int j = 0; j < k; j++) {
			p = strstr(p, "{\"code\":");
			if (!p) {
				fprintf(stderr, "unexpected outcomes: %s\n", outcomes);
				exit(1);
			}
			p += 8;
			int code = atoi(p);
			if (code == TASKERWORKER_RETRY_LATER) {
				b->retry[r++] = idx[j];
			} else if (code != TASKERWORKER_OK) {
				fprintf(stderr, "taskerworker_complete_batch: event %s: %s\n", b->id[idx[j]], outcomes);
				exit(1);
			}
		}
		taskerworker_free(outcomes);
		memcpy(all, b->retry, sizeof *all * r);
		idx = all;
		k = r;
	}
}

int main(int argc, char **argv) {
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: %s CONFIG|memory COUNT [BATCH] (DATABASE_URL from the environment)\n", argv[0]);
		return 2;
	}
	long count = atol(argv[2]);
	if (count < 1) count = 1;
	long batch = argc == 4 ? atol(argv[3]) : 1;
	if (batch < 1 || batch > MAX_BATCH) {
		fprintf(stderr, "BATCH is %ld; want 1..%d\n", batch, MAX_BATCH);
		return 2;
	}
	int memory = strcmp(argv[1], "memory") == 0;
	long long *samples = malloc(sizeof *samples * count);
	int rc;
	if (memory) {
		if (!taskerworker_bench_start) {
			fprintf(stderr, "CONFIG memory needs the benchmark source: link against a library built with -tags ffibench\n");
			return 1;
		}
		rc = taskerworker_bench_start(count);
		if (rc != TASKERWORKER_OK) die("taskerworker_bench_start", rc);
	} else {
		rc = taskerworker_start(argv[1], NULL);
		if (rc != TASKERWORKER_OK) die("taskerworker_start", rc);
	}

	long got = 0, empty = 0, nsamples = 0;
	long long total = 0;
	struct timespec idle = {0, 200000};
	if (batch == 1) {
		char id[ID_MAX], step[ID_MAX], result[RESULT_MAX];
		while (got < count) {
			long long t0 = now_ns();
			char *ev = NULL;
			rc = taskerworker_poll(&ev);
			if (rc == TASKERWORKER_NO_EVENT) {
				empty++;
				nanosleep(&idle, NULL);
				continue;
			}
			if (rc != TASKERWORKER_OK) die("taskerworker_poll", rc);
			if (field(ev, "event_id", id, sizeof id) || field(ev, "step_uuid", step, sizeof step)) {
				fprintf(stderr, "unexpected event: %s\n", ev);
				return 1;
			}
			format_result(result, sizeof result, step);
			while ((rc = taskerworker_complete(id, result)) == TASKERWORKER_RETRY_LATER) {
			}
			taskerworker_free(ev);
			long long t1 = now_ns();
			if (rc != TASKERWORKER_OK) die("taskerworker_complete", rc);
			samples[nsamples++] = t1 - t0;
			total += t1 - t0;
			got++;
		}
	} else {
		struct batch b;
		b.id = malloc(sizeof *b.id * batch);
		b.step = malloc(sizeof *b.step * batch);
		b.ids = malloc(ID_MAX * batch + 1);
		b.results = malloc(RESULT_MAX * batch + 3);
		b.retry = malloc(sizeof *b.retry * batch);
		while (got < count) {
			int want = count - got < batch ? (int)(count - got) : (int)batch;
			long long t0 = now_ns();
			char *evs = NULL;
			rc = taskerworker_poll_batch(want, &evs);
			if (rc == TASKERWORKER_NO_EVENT) {
				empty++;
				nanosleep(&idle, NULL);
				continue;
			}
			if (rc != TASKERWORKER_OK) die("taskerworker_poll_batch", rc);
			/* Walk the array: each event has event_id, then step_uuid. */
			const char *p = evs;
			b.n = 0;
			while (b.n < want && field_from(&p, "event_id", b.id[b.n], ID_MAX) == 0) {
				if (field_from(&p, "step_uuid", b.step[b.n], ID_MAX)) {
					fprintf(stderr, "unexpected event in: %s\n", evs);
					return 1;
				}
				b.n++;
			}
			if (b.n == 0 || strstr(p, "\"event_id\":\"")) {
				fprintf(stderr, "unexpected batch of up to %d: %s\n", want, evs);
				return 1;
			}
			complete_all(&b);
			taskerworker_free(evs);
			long long t1 = now_ns();
			samples[nsamples++] = (t1 - t0) / b.n;
			total += t1 - t0;
			got += b.n;
		}
		free(b.id);
		free(b.step);
		free(b.ids);
		free(b.results);
		free(b.retry);
	}
	if (memory) {
		long long delivered = -1;
		rc = taskerworker_bench_stop(&delivered);
		if (rc != TASKERWORKER_OK) die("taskerworker_bench_stop", rc);
		printf("INFO source=memory delivered=%lld\n", delivered);
		if (delivered != count) {
			fprintf(stderr, "delivered %lld completions, want %ld\n", delivered, count);
			return 1;
		}
	} else {
		rc = taskerworker_stop(0);
		if (rc != TASKERWORKER_OK) die("taskerworker_stop", rc);
		printf("INFO source=queue\n");
	}

	qsort(samples, nsamples, sizeof *samples, cmp);
	double mean = (double)total / got / 1000.0;
	printf("RESULT path=%s batch=%ld n=%ld p50_us=%.2f p90_us=%.2f p99_us=%.2f mean_us=%.2f events_per_s=%.0f empty_polls=%ld batches=%ld\n",
	       batch == 1 ? "c" : "c-batch", batch, got, samples[nsamples / 2] / 1000.0, samples[nsamples * 9 / 10] / 1000.0,
	       samples[nsamples * 99 / 100] / 1000.0, mean, 1e6 / mean, empty, nsamples);
	free(samples);
	return 0;
}
