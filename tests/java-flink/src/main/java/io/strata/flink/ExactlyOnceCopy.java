package io.strata.flink;

import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.serialization.SimpleStringSchema;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * A Flink job on a local mini-cluster that copies a topic to another with Flink's
 * exactly-once Kafka sink (one Kafka transaction per checkpoint, committed when the
 * checkpoint completes), prefixing every value with "copy-".
 *
 * <p>Arguments: BOOTSTRAP INPUT OUTPUT TRANSACTIONAL_ID_PREFIX FAIL_AT. The source is
 * bounded (it reads INPUT up to its end as of the start, read_committed). After FAIL_AT
 * records the map step throws once: Flink restarts the job from its last completed
 * checkpoint, aborts the transactions the failed attempt left open, and replays the input
 * from the checkpoint's offsets. Prints one JSON line when the job has finished:
 * {"finished": true, "failed_once": BOOLEAN}.
 */
public final class ExactlyOnceCopy {
    private static final AtomicLong SEEN = new AtomicLong();
    private static final AtomicBoolean FAILED = new AtomicBoolean();

    private ExactlyOnceCopy() {}

    /** Prefixes values; throws once, at the FAIL_AT-th record across attempts. */
    static final class CopyOnce implements MapFunction<String, String> {
        private final long failAt;

        CopyOnce(long failAt) {
            this.failAt = failAt;
        }

        @Override
        public String map(String value) throws Exception {
            long n = SEEN.incrementAndGet();
            if (n % 200 == 0) {
                // Pace the copy so that checkpoints complete while it runs.
                Thread.sleep(20);
            }
            if (n >= failAt && FAILED.compareAndSet(false, true)) {
                throw new IllegalStateException("injected failure at record " + n);
            }
            return "copy-" + value;
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 5) {
            System.err.println("usage: BOOTSTRAP INPUT OUTPUT TRANSACTIONAL_ID_PREFIX FAIL_AT");
            System.exit(2);
        }
        String bootstrap = args[0];
        String input = args[1];
        String output = args[2];
        String prefix = args[3];
        long failAt = Long.parseLong(args[4]);

        Configuration conf = Configuration.fromMap(Map.of(
                "restart-strategy.type", "fixed-delay",
                "restart-strategy.fixed-delay.attempts", "3",
                "restart-strategy.fixed-delay.delay", "200 ms",
                "rest.bind-port", "0"));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(1);
        env.enableCheckpointing(300);

        KafkaSource<String> source = KafkaSource.<String>builder()
                .setBootstrapServers(bootstrap)
                .setTopics(input)
                .setGroupId(prefix + "-source")
                .setStartingOffsets(OffsetsInitializer.earliest())
                .setBounded(OffsetsInitializer.latest())
                .setValueOnlyDeserializer(new SimpleStringSchema())
                .setProperty("isolation.level", "read_committed")
                .build();
        KafkaSink<String> sink = KafkaSink.<String>builder()
                .setBootstrapServers(bootstrap)
                .setRecordSerializer(KafkaRecordSerializationSchema.builder()
                        .setTopic(output)
                        .setValueSerializationSchema(new SimpleStringSchema())
                        .build())
                .setDeliveryGuarantee(DeliveryGuarantee.EXACTLY_ONCE)
                .setTransactionalIdPrefix(prefix)
                .setProperty("transaction.timeout.ms", "60000")
                .build();

        env.fromSource(source, WatermarkStrategy.noWatermarks(), "input")
                .map(new CopyOnce(failAt))
                .sinkTo(sink);
        env.execute("strata exactly-once copy");
        System.out.println("{\"finished\": true, \"failed_once\": " + FAILED.get() + "}");
    }
}
