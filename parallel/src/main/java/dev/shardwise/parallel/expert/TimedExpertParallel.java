package dev.shardwise.parallel.expert;

import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ExpertParallel;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * An {@link ExpertParallel} that times each all-to-all of another (GShard's dispatch and combine, their gradients
 * and the token counts) for a timeline: it runs the same calls in the same order and keeps when each began and ended.
 * One rank's training thread; the spans are kept until {@link #drain}.
 */
public final class TimedExpertParallel implements ExpertParallel {

    /**
     * One all-to-all.
     *
     * @param exchange which one
     * @param startNs  {@link System#nanoTime} when it was called
     * @param endNs    when it returned (every rank of the group had made it)
     */
    public record Span(Exchange exchange, long startNs, long endNs) { }

    private final ExpertParallel inner;
    private final List<Span> spans = new ArrayList<>();

    /** Times {@code inner}'s all-to-alls. */
    public TimedExpertParallel(ExpertParallel inner) {
        this.inner = Objects.requireNonNull(inner, "inner");
    }

    @Override
    public int size() {
        return inner.size();
    }

    @Override
    public int epRank() {
        return inner.epRank();
    }

    @Override
    public void allToAll(Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        inner.allToAll(output, receiveCounts, input, sendCounts);
    }

    @Override
    public void allToAll(Exchange exchange, Tensor output, int[] receiveCounts, Tensor input, int[] sendCounts) {
        long start = System.nanoTime();
        inner.allToAll(exchange, output, receiveCounts, input, sendCounts);
        spans.add(new Span(exchange, start, System.nanoTime()));
    }

    /** The spans since the last drain, in call order; forgets them. */
    public List<Span> drain() {
        List<Span> out = List.copyOf(spans);
        spans.clear();
        return out;
    }

    @Override
    public String toString() {
        return "timed " + inner;
    }
}
