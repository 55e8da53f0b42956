package io.strata.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReferenceArray;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * A small Kafka client CLI for the compatibility suite. Every command prints JSON, one object
 * per line, on stdout. Failures of the Kafka operation print {"error": "ExceptionSimpleName",
 * "message": "..."} and exit with status 3; usage errors exit with 2.
 *
 * <pre>
 * produce           --bootstrap B --topic T --count N [--compression none|gzip|snappy|lz4|zstd]
 *                   [--acks 0|1|all] [--idempotence true|false] [--partition P]
 *                   [--key-prefix K] [--value-prefix V] [--pad BYTES] [--header k=v]...
 *                   [--timestamp-start MS --timestamp-step MS]
 * consume           --bootstrap B --topic T [--partition P]... [--offset O] [--count N]
 *                   [--timeout-ms MS] [--isolation read_committed|read_uncommitted]
 *                   [--until-end]                  (assign(), no consumer group; --until-end:
 *                   read until the position reaches the end offsets (the LSO if read_committed)
 *                   as of the start, then stop)
 * txn-produce       --bootstrap B --topic T --transactional-id X --plan commit:N,abort:N,...
 *                   [--partition P] [--value-prefix V] [--quiet] [--timing]
 *                   (one transaction per plan step, values V0, V1, ... numbered across steps;
 *                   prints one line per step with the acked offsets and the step's outcome;
 *                   --quiet: the summary only; --timing: the summary has the milliseconds
 *                   from initTransactions done to the last transaction ended)
 * txn-copy          --bootstrap B --input T --output U --group G --transactional-id X
 *                   --count N [--action commit|abort]
 *                   (consume-transform-produce: reads N records of T partition 0 from G's
 *                   committed offset, writes "copy-" + value to U partition 0 and the next offset
 *                   with sendOffsetsToTransaction, then commits or aborts)
 * create-topic      --bootstrap B --topic T [--partitions N] [--replication-factor R]
 *                   [--config k=v]... [--validate-only]
 * describe-topic    --bootstrap B --topic T
 * describe-configs  --bootstrap B --topic T
 * alter-configs     --bootstrap B --topic T [--set k=v]... [--delete k]...
 * create-partitions --bootstrap B --topic T --count N
 * delete-topic      --bootstrap B --topic T
 * list-topics       --bootstrap B
 * list-offsets      --bootstrap B --topic T --partition P --spec earliest|latest|max-timestamp|TS
 * offsets-for-times --bootstrap B --topic T --partition P --timestamp TS   (consumer API)
 * group-consume     --bootstrap B --topic T --group G --duration-ms N [--strategy range|roundrobin|cooperative-sticky]
 *                   (joins the group with subscribe(), auto-commits, prints every record and every
 *                   assignment change as JSON lines until the duration ends)
 * </pre>
 */
public final class Cli {
    private static final int TIMEOUT_MS = 30_000;

    public static void main(String[] argv) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel",
                System.getProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn"));
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        if (argv.length == 0 || argv[0].equals("help") || argv[0].equals("--help")) {
            usage(0);
        }
        Args a = new Args(argv);
        int rc;
        try {
            rc = switch (a.command) {
                case "produce" -> produce(a);
                case "consume" -> consume(a);
                case "group-consume" -> groupConsume(a);
                case "create-topic" -> createTopic(a);
                case "describe-topic" -> describeTopic(a);
                case "describe-configs" -> describeConfigs(a);
                case "alter-configs" -> alterConfigs(a);
                case "create-partitions" -> createPartitions(a);
                case "delete-topic" -> deleteTopic(a);
                case "list-topics" -> listTopics(a);
                case "list-offsets" -> listOffsets(a);
                case "offsets-for-times" -> offsetsForTimes(a);
                case "txn-produce" -> txnProduce(a);
                case "txn-copy" -> txnCopy(a);
                default -> {
                    System.err.println("unknown command " + a.command);
                    yield 2;
                }
            };
        } catch (ExecutionException e) {
            rc = printError(e.getCause() == null ? e : e.getCause());
        } catch (org.apache.kafka.common.KafkaException e) {
            rc = printError(e);
        }
        System.out.flush();
        System.exit(rc);
    }

    private static void usage(int rc) {
        System.err.println("usage: Cli COMMAND --bootstrap HOST:PORT ... (see Cli.java)");
        System.exit(rc);
    }

    private static int printError(Throwable t) {
        out(obj("error", t.getClass().getSimpleName(), "message", String.valueOf(t.getMessage())));
        return 3;
    }

    // ---------------------------------------------------------------- producer

    private static int produce(Args a) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, a.get("compression", "none"));
        p.put(ProducerConfig.ACKS_CONFIG, a.get("acks", "all"));
        if (a.has("idempotence")) {
            p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, a.get("idempotence", "true"));
        }
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, "10485760");

        String topic = a.req("topic");
        int count = Integer.parseInt(a.req("count"));
        Integer partition = a.has("partition") ? Integer.valueOf(a.get("partition", null)) : null;
        String keyPrefix = a.get("key-prefix", null);
        String valuePrefix = a.get("value-prefix", "value-");
        int pad = Integer.parseInt(a.get("pad", "0"));
        Long tsStart = a.has("timestamp-start") ? Long.valueOf(a.get("timestamp-start", null)) : null;
        long tsStep = Long.parseLong(a.get("timestamp-step", "0"));
        List<Header> headers = new ArrayList<>();
        for (String kv : a.all("header")) {
            String[] parts = splitKv(kv);
            headers.add(new RecordHeader(parts[0], parts[1].getBytes(StandardCharsets.UTF_8)));
        }

        AtomicReferenceArray<Object> results = new AtomicReferenceArray<>(count);
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < count; i++) {
                byte[] key = keyPrefix == null ? null : (keyPrefix + i).getBytes(StandardCharsets.UTF_8);
                String v = valuePrefix + i;
                if (pad > 0) {
                    v = v + "x".repeat(pad);
                }
                Long ts = tsStart == null ? null : tsStart + i * tsStep;
                List<Header> hs = new ArrayList<>(headers);
                hs.add(new RecordHeader("seq", Integer.toString(i).getBytes(StandardCharsets.UTF_8)));
                ProducerRecord<byte[], byte[]> rec = new ProducerRecord<>(
                        topic, partition, ts, key, v.getBytes(StandardCharsets.UTF_8), hs);
                final int idx = i;
                producer.send(rec, (RecordMetadata md, Exception e) ->
                        results.set(idx, e != null ? e : md));
            }
            producer.flush();
        }
        int acked = 0;
        int failed = 0;
        for (int i = 0; i < count; i++) {
            Object r = results.get(i);
            if (r instanceof RecordMetadata md) {
                acked++;
                out(obj("i", i, "partition", md.partition(), "offset", md.offset(),
                        "timestamp", md.timestamp()));
            } else {
                failed++;
                String err = r == null ? "NoCallback" : r.getClass().getSimpleName();
                out(obj("i", i, "error", err,
                        "message", r == null ? "" : String.valueOf(((Exception) r).getMessage())));
            }
        }
        out(obj("summary", true, "acked", acked, "failed", failed));
        return failed == 0 ? 0 : 1;
    }

    // ---------------------------------------------------------------- consumer

    private static KafkaConsumer<byte[], byte[]> consumer(Args a) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, a.get("isolation", "read_uncommitted"));
        return new KafkaConsumer<>(p);
    }

    private static int groupConsume(Args a) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        p.put(ConsumerConfig.GROUP_ID_CONFIG, a.req("group"));
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "true");
        p.put(ConsumerConfig.AUTO_COMMIT_INTERVAL_MS_CONFIG, "200");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, a.get("session-timeout-ms", "6000"));
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        String strategy = switch (a.get("strategy", "range")) {
            case "roundrobin" -> "org.apache.kafka.clients.consumer.RoundRobinAssignor";
            case "cooperative-sticky" -> "org.apache.kafka.clients.consumer.CooperativeStickyAssignor";
            default -> "org.apache.kafka.clients.consumer.RangeAssignor";
        };
        p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, strategy);
        long deadline = System.currentTimeMillis() + Long.parseLong(a.req("duration-ms"));
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            c.subscribe(List.of(a.req("topic")));
            Set<TopicPartition> last = null;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    out(obj("partition", r.partition(), "offset", r.offset(),
                            "key", r.key() == null ? null : new String(r.key(), StandardCharsets.UTF_8),
                            "value", r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8)));
                }
                Set<TopicPartition> now = c.assignment();
                if (!now.equals(last)) {
                    List<Integer> parts = new ArrayList<>();
                    for (TopicPartition tp : now) {
                        parts.add(tp.partition());
                    }
                    out(obj("assignment", parts));
                    last = Set.copyOf(now);
                }
            }
        }
        return 0;
    }

    private static int consume(Args a) {
        String topic = a.req("topic");
        long timeoutMs = Long.parseLong(a.get("timeout-ms", "30000"));
        try (KafkaConsumer<byte[], byte[]> c = consumer(a)) {
            List<TopicPartition> tps = new ArrayList<>();
            if (a.has("partition")) {
                for (String s : a.all("partition")) {
                    tps.add(new TopicPartition(topic, Integer.parseInt(s)));
                }
            } else {
                for (PartitionInfo pi : c.partitionsFor(topic, Duration.ofMillis(TIMEOUT_MS))) {
                    tps.add(new TopicPartition(topic, pi.partition()));
                }
            }
            c.assign(tps);
            if (a.has("offset")) {
                long off = Long.parseLong(a.get("offset", "0"));
                for (TopicPartition tp : tps) {
                    c.seek(tp, off);
                }
            } else {
                c.seekToBeginning(tps);
            }
            if (a.has("until-end")) {
                return consumeUntilEnd(c, tps, timeoutMs);
            }
            // Without --count, read up to the end offsets as of now.
            long want;
            if (a.has("count")) {
                want = Long.parseLong(a.get("count", "0"));
            } else {
                want = 0;
                Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofMillis(TIMEOUT_MS));
                for (TopicPartition tp : tps) {
                    want += end.get(tp) - c.position(tp, Duration.ofMillis(TIMEOUT_MS));
                }
            }
            long got = 0;
            long deadline = System.currentTimeMillis() + timeoutMs;
            while (got < want && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    Map<String, Object> hs = new LinkedHashMap<>();
                    for (Header h : r.headers()) {
                        hs.put(h.key(), h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8));
                    }
                    out(obj("partition", r.partition(), "offset", r.offset(), "timestamp", r.timestamp(),
                            "key", r.key() == null ? null : new String(r.key(), StandardCharsets.UTF_8),
                            "value", r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8),
                            "headers", hs));
                    got++;
                }
            }
            out(obj("summary", true, "consumed", got, "wanted", want));
            return got >= want ? 0 : 1;
        }
    }

    private static void printRecord(ConsumerRecord<byte[], byte[]> r) {
        Map<String, Object> hs = new LinkedHashMap<>();
        for (Header h : r.headers()) {
            hs.put(h.key(), h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8));
        }
        out(obj("partition", r.partition(), "offset", r.offset(), "timestamp", r.timestamp(),
                "key", r.key() == null ? null : new String(r.key(), StandardCharsets.UTF_8),
                "value", r.value() == null ? null : new String(r.value(), StandardCharsets.UTF_8),
                "headers", hs));
    }

    /** Reads until every partition's position reaches its end offset as of the start (for a
     * read_committed consumer the last stable offset: control records and aborted data are
     * skipped by the position without being returned). */
    private static int consumeUntilEnd(KafkaConsumer<byte[], byte[]> c, List<TopicPartition> tps,
                                       long timeoutMs) {
        Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofMillis(TIMEOUT_MS));
        long got = 0;
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (System.currentTimeMillis() < deadline) {
            boolean done = true;
            for (TopicPartition tp : tps) {
                if (c.position(tp, Duration.ofMillis(TIMEOUT_MS)) < end.get(tp)) {
                    done = false;
                }
            }
            if (done) {
                break;
            }
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                printRecord(r);
                got++;
            }
        }
        Map<String, Object> ends = new TreeMap<>();
        Map<String, Object> positions = new TreeMap<>();
        boolean reached = true;
        for (TopicPartition tp : tps) {
            long pos = c.position(tp, Duration.ofMillis(TIMEOUT_MS));
            ends.put(Integer.toString(tp.partition()), end.get(tp));
            positions.put(Integer.toString(tp.partition()), pos);
            reached &= pos >= end.get(tp);
        }
        out(obj("summary", true, "consumed", got, "end", ends, "position", positions));
        return reached ? 0 : 1;
    }

    // ---------------------------------------------------------------- transactions

    private static Properties txnProducerProps(Args a) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, a.req("transactional-id"));
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, a.get("transaction-timeout-ms", "60000"));
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        return p;
    }

    private static int txnProduce(Args a) throws Exception {
        String topic = a.req("topic");
        int partition = Integer.parseInt(a.get("partition", "0"));
        String valuePrefix = a.get("value-prefix", "value-");
        int n = 0;
        long elapsedMs;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(txnProducerProps(a))) {
            producer.initTransactions();
            long t0 = System.nanoTime();
            int step = 0;
            for (String s : a.req("plan").split(",")) {
                String[] parts = s.split(":");
                String action = parts[0];
                int count = Integer.parseInt(parts[1]);
                producer.beginTransaction();
                List<java.util.concurrent.Future<RecordMetadata>> fs = new ArrayList<>();
                for (int i = 0; i < count; i++) {
                    fs.add(producer.send(new ProducerRecord<>(topic, partition, null,
                            (valuePrefix + n++).getBytes(StandardCharsets.UTF_8))));
                }
                producer.flush();
                List<Object> offsets = new ArrayList<>();
                for (java.util.concurrent.Future<RecordMetadata> f : fs) {
                    offsets.add(f.get(TIMEOUT_MS, TimeUnit.MILLISECONDS).offset());
                }
                switch (action) {
                    case "commit" -> producer.commitTransaction();
                    case "abort" -> producer.abortTransaction();
                    default -> throw new IllegalArgumentException("plan step " + s);
                }
                if (!a.has("quiet")) {
                    out(obj("step", step, "action", action, "offsets", offsets));
                }
                step++;
            }
            elapsedMs = (System.nanoTime() - t0) / 1_000_000;
        }
        if (a.has("timing")) {
            out(obj("summary", true, "produced", n, "elapsed_ms", elapsedMs));
        } else {
            out(obj("summary", true, "produced", n));
        }
        return 0;
    }

    private static int txnCopy(Args a) throws Exception {
        String input = a.req("input");
        String output = a.req("output");
        int count = Integer.parseInt(a.req("count"));
        String action = a.get("action", "commit");
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, a.req("group"));
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, Integer.toString(count));
        cp.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        cp.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        TopicPartition in = new TopicPartition(input, 0);
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp);
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(txnProducerProps(a))) {
            c.assign(List.of(in));
            producer.initTransactions();
            long start = c.position(in, Duration.ofMillis(TIMEOUT_MS));
            producer.beginTransaction();
            int got = 0;
            long next = start;
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            while (got < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    if (got == count) {
                        break;
                    }
                    producer.send(new ProducerRecord<>(output, 0, r.key(),
                            ("copy-" + new String(r.value(), StandardCharsets.UTF_8))
                                    .getBytes(StandardCharsets.UTF_8)));
                    next = r.offset() + 1;
                    got++;
                }
            }
            if (got < count) {
                producer.abortTransaction();
                out(obj("error", "Timeout", "message", "read " + got + " of " + count));
                return 1;
            }
            producer.sendOffsetsToTransaction(
                    Map.of(in, new org.apache.kafka.clients.consumer.OffsetAndMetadata(next)),
                    c.groupMetadata());
            if (action.equals("commit")) {
                producer.commitTransaction();
            } else {
                // Sent before the abort: records still in the accumulator when it aborts are
                // dropped, and whether they left in time would depend on the broker's speed.
                producer.flush();
                producer.abortTransaction();
            }
            out(obj("copied", got, "start", start, "next", next, "action", action));
            return 0;
        }
    }

    private static int offsetsForTimes(Args a) {
        TopicPartition tp = new TopicPartition(a.req("topic"), Integer.parseInt(a.req("partition")));
        long ts = Long.parseLong(a.req("timestamp"));
        try (KafkaConsumer<byte[], byte[]> c = consumer(a)) {
            Map<TopicPartition, OffsetAndTimestamp> r =
                    c.offsetsForTimes(Map.of(tp, ts), Duration.ofMillis(TIMEOUT_MS));
            OffsetAndTimestamp ot = r.get(tp);
            out(ot == null ? obj("offset", null, "timestamp", null)
                    : obj("offset", ot.offset(), "timestamp", ot.timestamp()));
            return 0;
        }
    }

    // ---------------------------------------------------------------- admin

    private static Admin admin(Args a) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, a.req("bootstrap"));
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(p);
    }

    private static int createTopic(Args a) throws Exception {
        Map<String, String> configs = new LinkedHashMap<>();
        for (String kv : a.all("config")) {
            String[] parts = splitKv(kv);
            configs.put(parts[0], parts[1]);
        }
        Optional<Integer> partitions = a.has("partitions")
                ? Optional.of(Integer.parseInt(a.get("partitions", null))) : Optional.empty();
        Optional<Short> rf = a.has("replication-factor")
                ? Optional.of(Short.parseShort(a.get("replication-factor", null))) : Optional.empty();
        NewTopic nt = new NewTopic(a.req("topic"), partitions, rf).configs(configs);
        try (Admin admin = admin(a)) {
            admin.createTopics(List.of(nt), new CreateTopicsOptions().validateOnly(a.has("validate-only")))
                    .all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            out(obj("ok", true));
            return 0;
        }
    }

    private static int describeTopic(Args a) throws Exception {
        String topic = a.req("topic");
        try (Admin admin = admin(a)) {
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames()
                    .get(TIMEOUT_MS, TimeUnit.MILLISECONDS).get(topic);
            List<Object> parts = new ArrayList<>();
            for (TopicPartitionInfo pi : d.partitions()) {
                List<Object> replicas = new ArrayList<>();
                pi.replicas().forEach(n -> replicas.add(n.id()));
                List<Object> isr = new ArrayList<>();
                pi.isr().forEach(n -> isr.add(n.id()));
                parts.add(obj("partition", pi.partition(),
                        "leader", pi.leader() == null ? null : pi.leader().id(),
                        "replicas", replicas, "isr", isr));
            }
            out(obj("name", d.name(), "topic_id", d.topicId().toString(), "internal", d.isInternal(),
                    "partition_count", d.partitions().size(), "partitions", parts));
            return 0;
        }
    }

    private static int describeConfigs(Args a) throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, a.req("topic"));
        try (Admin admin = admin(a)) {
            Config cfg = admin.describeConfigs(List.of(res)).all()
                    .get(TIMEOUT_MS, TimeUnit.MILLISECONDS).get(res);
            Map<String, Object> values = new TreeMap<>();
            Map<String, Object> sources = new TreeMap<>();
            for (ConfigEntry e : cfg.entries()) {
                values.put(e.name(), e.value());
                sources.put(e.name(), e.source().name());
            }
            out(obj("configs", values, "sources", sources));
            return 0;
        }
    }

    private static int alterConfigs(Args a) throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, a.req("topic"));
        List<AlterConfigOp> ops = new ArrayList<>();
        for (String kv : a.all("set")) {
            String[] parts = splitKv(kv);
            ops.add(new AlterConfigOp(new ConfigEntry(parts[0], parts[1]), AlterConfigOp.OpType.SET));
        }
        for (String k : a.all("delete")) {
            ops.add(new AlterConfigOp(new ConfigEntry(k, null), AlterConfigOp.OpType.DELETE));
        }
        Map<ConfigResource, Collection<AlterConfigOp>> m = new HashMap<>();
        m.put(res, ops);
        try (Admin admin = admin(a)) {
            admin.incrementalAlterConfigs(m).all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            out(obj("ok", true));
            return 0;
        }
    }

    private static int createPartitions(Args a) throws Exception {
        try (Admin admin = admin(a)) {
            admin.createPartitions(Map.of(a.req("topic"), NewPartitions.increaseTo(Integer.parseInt(a.req("count")))))
                    .all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            out(obj("ok", true));
            return 0;
        }
    }

    private static int deleteTopic(Args a) throws Exception {
        try (Admin admin = admin(a)) {
            admin.deleteTopics(List.of(a.req("topic"))).all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            out(obj("ok", true));
            return 0;
        }
    }

    private static int listTopics(Args a) throws Exception {
        try (Admin admin = admin(a)) {
            Set<String> names = admin.listTopics().names().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            out(obj("topics", new ArrayList<Object>(new java.util.TreeSet<>(names))));
            return 0;
        }
    }

    private static int listOffsets(Args a) throws Exception {
        TopicPartition tp = new TopicPartition(a.req("topic"), Integer.parseInt(a.req("partition")));
        String spec = a.req("spec");
        OffsetSpec os = switch (spec) {
            case "earliest" -> OffsetSpec.earliest();
            case "latest" -> OffsetSpec.latest();
            case "max-timestamp" -> OffsetSpec.maxTimestamp();
            default -> OffsetSpec.forTimestamp(Long.parseLong(spec));
        };
        try (Admin admin = admin(a)) {
            ListOffsetsResult.ListOffsetsResultInfo info = admin.listOffsets(Map.of(tp, os)).partitionResult(tp)
                    .get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            out(obj("offset", info.offset(), "timestamp", info.timestamp()));
            return 0;
        }
    }

    // ---------------------------------------------------------------- plumbing

    private static String[] splitKv(String kv) {
        int eq = kv.indexOf('=');
        if (eq < 0) {
            throw new IllegalArgumentException("expected k=v, got " + kv);
        }
        return new String[] {kv.substring(0, eq), kv.substring(eq + 1)};
    }

    /** --name value pairs; a flag followed by another flag (or nothing) gets the value "true". */
    private static final class Args {
        final String command;
        final Map<String, List<String>> values = new HashMap<>();

        Args(String[] argv) {
            command = argv[0];
            for (int i = 1; i < argv.length; i++) {
                if (!argv[i].startsWith("--")) {
                    throw new IllegalArgumentException("unexpected argument " + argv[i]);
                }
                String name = argv[i].substring(2);
                String value = "true";
                if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) {
                    value = argv[++i];
                }
                values.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
            }
        }

        boolean has(String name) {
            return values.containsKey(name);
        }

        String get(String name, String dflt) {
            List<String> v = values.get(name);
            return v == null ? dflt : v.get(v.size() - 1);
        }

        List<String> all(String name) {
            return values.getOrDefault(name, List.of());
        }

        String req(String name) {
            String v = get(name, null);
            if (v == null) {
                System.err.println("missing --" + name);
                System.exit(2);
            }
            return v;
        }
    }

    private static Map<String, Object> obj(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }

    private static void out(Map<String, Object> m) {
        StringBuilder sb = new StringBuilder();
        json(sb, m);
        System.out.println(sb);
    }

    @SuppressWarnings("unchecked")
    private static void json(StringBuilder sb, Object o) {
        if (o == null) {
            sb.append("null");
        } else if (o instanceof Number || o instanceof Boolean) {
            sb.append(o);
        } else if (o instanceof Map<?, ?> m) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!first) {
                    sb.append(',');
                }
                first = false;
                json(sb, String.valueOf(e.getKey()));
                sb.append(':');
                json(sb, e.getValue());
            }
            sb.append('}');
        } else if (o instanceof List<?> l) {
            sb.append('[');
            for (int i = 0; i < l.size(); i++) {
                if (i > 0) {
                    sb.append(',');
                }
                json(sb, l.get(i));
            }
            sb.append(']');
        } else {
            String s = o.toString();
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> sb.append("\\\"");
                    case '\\' -> sb.append("\\\\");
                    case '\n' -> sb.append("\\n");
                    case '\r' -> sb.append("\\r");
                    case '\t' -> sb.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            sb.append(String.format("\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                    }
                }
            }
            sb.append('"');
        }
    }
}
