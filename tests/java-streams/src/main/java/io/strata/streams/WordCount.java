package io.strata.streams;

import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * Kafka Streams word count with processing.guarantee=exactly_once_v2, for the compatibility
 * suite (tests/compat/test_streams_eos.py).
 *
 * <pre>
 * WordCount --bootstrap B --app-id A --input IN --output OUT --state-dir DIR
 *           [--commit-interval-ms MS (100)] [--threads N (1)]
 *           [--session-timeout-ms MS (6000)] [--max-poll-records N (100)]
 *           [--cache-bytes N (0)] [--processing-guarantee G (exactly_once_v2)]
 * </pre>
 *
 * Reads text lines (any key) from IN, splits them on whitespace, groups by word, counts, and
 * writes word -> count (the count as a decimal string) to OUT. Its internal topics are
 * A-words-repartition and A-counts-changelog. Runs until killed:
 * SIGTERM closes it cleanly (exit 0); an error that stops the client exits with status 1. Prints
 * one line per state change on stdout ("STATE OLD -> NEW"); the Kafka logs go to stderr.
 *
 * <p>The record cache is off by default (--cache-bytes 0), so every increment of a count is
 * written to OUT: under exactly-once a read_committed consumer sees each word's counts as
 * exactly 1, 2, 3, ... however often the application is killed.
 */
public final class WordCount {
    public static void main(String[] argv) throws Exception {
        Map<String, String> a = parse(argv);
        String bootstrap = required(a, "bootstrap");
        String appId = required(a, "app-id");
        String input = required(a, "input");
        String output = required(a, "output");
        String stateDir = required(a, "state-dir");

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
              a.getOrDefault("processing-guarantee", StreamsConfig.EXACTLY_ONCE_V2));
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, a.getOrDefault("commit-interval-ms", "100"));
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, a.getOrDefault("threads", "1"));
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, a.getOrDefault("cache-bytes", "0"));
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.MAX_POLL_RECORDS_CONFIG),
              a.getOrDefault("max-poll-records", "100"));
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        // After a SIGKILL the dead member stays in the group until its session times out; the
        // restarted instance's first rebalance waits for that.  6 s is the broker's minimum.
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG),
              a.getOrDefault("session-timeout-ms", "6000"));
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), "1000");
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
            .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\s+")))
            .filter((k, w) -> !w.isEmpty())
            .map((k, w) -> KeyValue.pair(w, w))
            .groupByKey(Grouped.with("words", Serdes.String(), Serdes.String()))
            .count(Materialized.as("counts"))
            .toStream()
            .mapValues(String::valueOf)
            .to(output, Produced.with(Serdes.String(), Serdes.String()));
        Topology topology = b.build();
        System.err.println(topology.describe());

        KafkaStreams streams = new KafkaStreams(topology, p);
        CountDownLatch done = new CountDownLatch(1);
        int[] rc = {0};
        streams.setStateListener((now, old) -> {
            System.out.println("STATE " + old + " -> " + now);
            System.out.flush();
            if (now == KafkaStreams.State.ERROR) {
                rc[0] = 1;
            }
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.out.println("UNCAUGHT " + e);
            e.printStackTrace();
            System.out.flush();
            rc[0] = 1;
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // SIGTERM: close (committing the open transaction), then exit 0, not the JVM's 143.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            boolean closed = streams.close(Duration.ofSeconds(30));
            System.out.println("EXIT " + (closed ? rc[0] : 1) + " (SIGTERM)");
            System.out.flush();
            Runtime.getRuntime().halt(closed ? rc[0] : 1);
        }));
        streams.start();
        done.await();
        streams.close(Duration.ofSeconds(30));
        System.out.println("EXIT " + rc[0]);
        System.out.flush();
        Runtime.getRuntime().halt(rc[0]);
    }

    private static Map<String, String> parse(String[] argv) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
                usage("bad argument " + argv[i]);
            }
            m.put(argv[i].substring(2), argv[++i]);
        }
        return m;
    }

    private static String required(Map<String, String> a, String k) {
        String v = a.get(k);
        if (v == null) {
            usage("missing --" + k);
        }
        return v;
    }

    private static void usage(String why) {
        System.err.println("WordCount: " + why + "\nusage: WordCount --bootstrap B --app-id A "
            + "--input IN --output OUT --state-dir DIR [--commit-interval-ms MS] "
            + "[--threads N] [--session-timeout-ms MS] "
            + "[--max-poll-records N] [--cache-bytes N] [--processing-guarantee G]");
        System.exit(2);
    }
}
