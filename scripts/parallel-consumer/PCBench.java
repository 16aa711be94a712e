import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.CommitMode;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.ParallelStreamProcessor;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Drives Confluent Parallel Consumer the way kbatch's ordering bench drives
 * kbatch: one topic, a fresh group, a handler that waits a fixed time per
 * record (a sink round trip), until every record is handled or a deadline.
 * It prints one line, key=value pairs, that the bench parses:
 * handled, span_ns (first to last record handled), order_violations (per-key
 * offsets that went backwards, KEY and PARTITION orders only).
 *
 * Arguments: bootstrap topic group ordering(KEY|UNORDERED|PARTITION)
 * concurrency records work_ms deadline_ms
 */
public final class PCBench {
  public static void main(String[] args) throws Exception {
    if (args.length == 1 && args[0].equals("--version")) {
      System.out.println("parallel-consumer-core 0.5.3.3");
      return;
    }
    if (args.length != 8) {
      System.err.println("usage: PCBench bootstrap topic group ordering concurrency records work_ms deadline_ms");
      System.exit(2);
    }
    String bootstrap = args[0], topic = args[1], group = args[2];
    ProcessingOrder ordering = ProcessingOrder.valueOf(args[3]);
    int concurrency = Integer.parseInt(args[4]);
    long want = Long.parseLong(args[5]);
    long workMs = Long.parseLong(args[6]);
    long deadlineMs = Long.parseLong(args[7]);

    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p);

    ParallelConsumerOptions<byte[], byte[]> options = ParallelConsumerOptions.<byte[], byte[]>builder()
        .ordering(ordering)
        .maxConcurrency(concurrency)
        .consumer(consumer)
        .commitMode(CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS)
        .build();
    ParallelStreamProcessor<byte[], byte[]> pc = ParallelStreamProcessor.createEosStreamProcessor(options);
    pc.subscribe(List.of(topic));

    AtomicLong handled = new AtomicLong();
    AtomicLong first = new AtomicLong();
    AtomicLong last = new AtomicLong();
    AtomicLong violations = new AtomicLong();
    Map<String, Long> lastOffset = new ConcurrentHashMap<>();
    boolean checkKeys = ordering != ProcessingOrder.UNORDERED;
    pc.poll(ctx -> {
      try {
        Thread.sleep(workMs);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
      ctx.forEach(rc -> {
        var r = rc.getConsumerRecord();
        if (checkKeys) {
          String k = r.key() == null ? "" : new String(r.key());
          Long prev = lastOffset.put(k, r.offset());
          if (prev != null && prev >= r.offset()) {
            violations.incrementAndGet();
          }
        }
        long now = System.nanoTime();
        first.compareAndSet(0, now);
        last.set(now);
        handled.incrementAndGet();
      });
    });

    long start = System.nanoTime();
    long deadline = -1;
    while (handled.get() < want) {
      Thread.sleep(5);
      long f = first.get();
      if (f != 0 && deadline < 0) {
        deadline = f + deadlineMs * 1_000_000L;
      }
      if (deadline > 0 && System.nanoTime() >= deadline) {
        break;
      }
      if (f == 0 && System.nanoTime() - start > 120_000_000_000L) {
        System.err.println("no record received in 120s");
        System.exit(1);
      }
    }
    long n = handled.get();
    long span = last.get() - first.get();
    System.out.println("handled=" + n + " span_ns=" + span + " order_violations=" + violations.get());
    System.out.flush();
    pc.closeDontDrainFirst(Duration.ofSeconds(10));
    System.exit(0);
  }
}
