/*
 * roundtrip_bench.c: poll + complete round trips through libtaskerworker.so
 * from one C thread, the floor under every foreign binding (cgo entry and
 * exit, JSON out and in, the FFI channel).
 *
 *   roundtrip_bench CONFIG COUNT        (DATABASE_URL from the environment)
 *
 * CONFIG is worker.toml text or a path. The queue must hold at least COUNT
 * steps. Only round trips are timed (poll returned an event, a result was
 * built from its ids, complete accepted it, the event string was freed); a
 * poll that finds the dispatch channel empty is counted but not timed.
 * Prints one line:
 *   RESULT path=c n=... p50_us=... p90_us=... p99_us=... mean_us=... events_per_s=... empty_polls=...
 *
 * bindings/bench_test.go (BenchmarkRoundTrip/c) builds and runs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "taskerworker.h"

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

/* copy the string value of "key":"..." from json into out (size n) */
static int field(const char *json, const char *key, char *out, size_t n) {
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":\"", key);
	const char *p = strstr(json, pat);
	if (!p) return -1;
	p += strlen(pat);
	const char *q = strchr(p, '"');
	if (!q || (size_t)(q - p) >= n) return -1;
	memcpy(out, p, q - p);
	out[q - p] = 0;
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: %s CONFIG COUNT (DATABASE_URL from the environment)\n", argv[0]);
		return 2;
	}
	long count = atol(argv[2]);
	if (count < 1) count = 1;
	long long *samples = malloc(sizeof *samples * count);
	int rc = taskerworker_start(argv[1], NULL);
	if (rc != TASKERWORKER_OK) die("taskerworker_start", rc);

	char id[64], step[64], result[512];
	long got = 0, empty = 0;
	struct timespec idle = {0, 200000};
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
		snprintf(result, sizeof result,
		         "{\"step_uuid\":\"%s\",\"success\":true,\"result\":null,\"status\":\"completed\","
		         "\"metadata\":{\"execution_time_ms\":0,\"retryable\":false}}", step);
		while ((rc = taskerworker_complete(id, result)) == TASKERWORKER_RETRY_LATER) {
		}
		taskerworker_free(ev);
		long long t1 = now_ns();
		if (rc != TASKERWORKER_OK) die("taskerworker_complete", rc);
		samples[got++] = t1 - t0;
	}
	rc = taskerworker_stop(0);
	if (rc != TASKERWORKER_OK) die("taskerworker_stop", rc);

	qsort(samples, count, sizeof *samples, cmp);
	double sum = 0;
	for (long i = 0; i < count; i++) sum += samples[i];
	double mean = sum / count / 1000.0;
	printf("RESULT path=c n=%ld p50_us=%.2f p90_us=%.2f p99_us=%.2f mean_us=%.2f events_per_s=%.0f empty_polls=%ld\n",
	       count, samples[count / 2] / 1000.0, samples[count * 9 / 10] / 1000.0, samples[count * 99 / 100] / 1000.0,
	       mean, 1e6 / mean, empty);
	free(samples);
	return 0;
}
