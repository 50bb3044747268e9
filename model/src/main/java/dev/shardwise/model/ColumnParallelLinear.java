package dev.shardwise.model;

import dev.shardwise.core.memory.StepArena;
import dev.shardwise.core.tensor.Tensor;

/**
 * Column-parallel linear layer (Shoeybi et al. 2019): Y = X·A + b with A split by columns into A_1..A_tp (in our
 * [out, in] layout W = Aᵀ is split by output rows), so rank r computes Y_r = X·A_r + b_r, its slice of the output
 * features, from the whole (replicated) input X.
 *
 * <p>Shapes: x [N, IN] -> y [N, OUT/tp]. The output may be cut in several sections split separately (the fused
 * qkv: rank r holds its heads' q rows, then its kv heads' k rows, then their v rows), each section's rank-r piece
 * [r·S/tp, (r+1)·S/tp) in order; the parameter records them in its {@link ParameterSet.Slice}. A section may be cut
 * into fewer pieces than tp (GQA's k and v when kvHeads &lt; tp): then each piece is held by tp/pieces consecutive
 * ranks, rank r taking piece r / (tp/pieces), recorded as the slice's replicas.
 *
 * <p>Communication: none inside. The input gradient it writes is this rank's partial sum dY_r·A_rᵀ; the layer
 * that owns the input applies f's backward ({@link TensorParallel#copyToRegionBackward}: an all-reduce of
 * dX [N, IN] over the tp group, 2·(tp-1)/tp·N·IN elements per rank) once, after every column-parallel linear
 * that reads the same input has added its part (SwiGLU's gate and up share one all-reduce). Forward, f is the
 * identity. Under sequence parallelism the owner gathers the input first and reduce-scatters the partial dX instead
 * ({@link ColumnParallelInput}).
 */
final class ColumnParallelLinear {
    private final Linear local;

    /**
     * Declares rank {@code tp.tpRank()}'s slice of {@code name.weight} [Σsections, in] ~ {@code init} and, if
     * {@code bias}, of {@code name.bias} [Σsections] = 0; with tp = 1 the whole tensors, as {@link Linear#declare}.
     *
     * @throws IllegalArgumentException if tp does not divide a section
     */
    static void declare(ParameterSet.Builder builder, String name, int in, int[] sections, ParameterSet.Init init,
                        boolean bias, TensorParallel tp, String field, String what) {
        int[] pieces = new int[sections.length];
        java.util.Arrays.fill(pieces, tp.size());
        declare(builder, name, in, sections, pieces, init, bias, tp, field, what);
    }

    /**
     * As {@link #declare(ParameterSet.Builder, String, int, int[], ParameterSet.Init, boolean, TensorParallel, String,
     * String)}, section i cut into {@code pieces[i]} pieces (tp, or a divisor of tp: replicated over tp/pieces[i] ranks).
     *
     * @throws IllegalArgumentException if a section does not split into its pieces, or pieces[i] does not divide tp
     */
    static void declare(ParameterSet.Builder builder, String name, int in, int[] sections, int[] pieces, ParameterSet.Init init,
                        boolean bias, TensorParallel tp, String field, String what) {
        int out = 0;
        for (int s : sections) out += s;
        if (tp.size() == 1) {
            builder.declare(name + ".weight", init, true, out, in);
            if (bias) builder.declare(name + ".bias", new ParameterSet.Init.Constant(0), false, out);
            return;
        }
        int[] starts = new int[sections.length], lengths = new int[sections.length], replicas = new int[sections.length];
        int sectionStart = 0;
        for (int i = 0; i < sections.length; i++) {
            if (pieces[i] == tp.size()) {
                lengths[i] = tp.divide(sections[i], field, what);
                replicas[i] = 1;
            } else {
                if (pieces[i] < 1 || tp.size() % pieces[i] != 0 || sections[i] % pieces[i] != 0) {
                    throw new IllegalArgumentException("section " + i + " of " + name + " (" + sections[i] + " rows) cannot be cut "
                            + "into " + pieces[i] + " pieces shared by tp=" + tp.size() + " ranks (" + what + ")");
                }
                lengths[i] = sections[i] / pieces[i];
                replicas[i] = tp.size() / pieces[i];
            }
            starts[i] = sectionStart + tp.tpRank() / replicas[i] * lengths[i];
            sectionStart += sections[i];
        }
        builder.declareSlice(name + ".weight", init, true, new ParameterSet.Slice(0, new int[]{out, in}, starts, lengths, 0, replicas));
        if (bias) {
            builder.declareSlice(name + ".bias", new ParameterSet.Init.Constant(0), false,
                    new ParameterSet.Slice(0, new int[]{out}, starts, lengths, 0, replicas));
        }
    }

    ColumnParallelLinear(ParameterSet params, String name, boolean bias) {
        this.local = new Linear(params, name, bias);
    }

    /** x [N, IN] -> y [N, OUT/tp] = x·W_rᵀ + b_r, in {@code arena}. */
    Tensor forward(StepArena arena, Tensor x) {
        return local.forward(arena, x);
    }

    /** As {@link #forward}, into {@code y} [N, OUT/tp] (not read); returns it. */
    Tensor forwardInto(Tensor y, Tensor x) {
        return local.forwardInto(y, x);
    }

    /** Writes this rank's partial dx = dy·W_r [N, IN]; dW_r += dyᵀ·x, db_r += Σ dy (queued on {@code weights} if not null). */
    void backward(Tensor dx, Tensor dy, Tensor x, WeightGradients weights) {
        local.backward(dx, dy, x, weights);
    }

    /** As {@link #backward}, adding onto dx: dx += dy·W_r. */
    void backwardAdd(Tensor dx, Tensor dy, Tensor x, WeightGradients weights) {
        local.backwardAdd(dx, dy, x, weights);
    }
}
