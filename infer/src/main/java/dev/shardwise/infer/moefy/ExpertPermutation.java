package dev.shardwise.infer.moefy;

import dev.shardwise.core.tensor.Tensor;
import dev.shardwise.model.ModelConfig;
import dev.shardwise.model.ParameterSet;

import java.util.List;

/**
 * Reorders a block's FFN neurons into expert order (MoEfication, Zhang et al. 2022): neuron {@code order[j]} of the
 * trained FFN becomes neuron j, so expert e is neurons [e·S, (e+1)·S). The input linears' rows and biases (fc, or
 * gate and up) and the output linear's columns (proj, or down) move together, which leaves the dense function
 * unchanged: y = Σ_j a_j(x)·w_out,j + b is a sum over neurons, and only its order of terms changes.
 */
final class ExpertPermutation {
    private ExpertPermutation() { }

    /**
     * The neuron order that groups {@code assignment} (cluster of each of the F neurons) expert by expert, each
     * expert's neurons in their original order.
     */
    static int[] orderOf(int[] assignment, int experts) {
        int[] order = new int[assignment.length];
        int j = 0;
        for (int e = 0; e < experts; e++) for (int i = 0; i < assignment.length; i++) if (assignment[i] == e) order[j++] = i;
        if (j != assignment.length) throw new IllegalArgumentException("assignment has clusters outside [0, " + experts + ")");
        return order;
    }

    /** The input weight vector of each of block {@code layer}'s F neurons: fc's rows, or gate's and up's rows joined. */
    static double[][] neuronVectors(ParameterSet params, ModelConfig config, int layer) {
        List<String> inputs = inputLinears(config);
        int f = config.ffnHidden(), c = config.hidden();
        double[][] v = new double[f][c * inputs.size()];
        for (int k = 0; k < inputs.size(); k++) {
            double[] w = params.get("h." + layer + ".mlp." + inputs.get(k) + ".weight").value().toDoubleArray();
            for (int i = 0; i < f; i++) System.arraycopy(w, i * c, v[i], k * c, c);
        }
        return v;
    }

    /** Permutes block {@code layer}'s FFN parameters in {@code params} in place by {@code order} (see above). */
    static void apply(ParameterSet params, ModelConfig config, int layer, int[] order) {
        int f = config.ffnHidden(), c = config.hidden();
        if (order.length != f) throw new IllegalArgumentException("order has " + order.length + " neurons, the FFN " + f);
        String p = "h." + layer + ".mlp.";
        for (String linear : inputLinears(config)) {
            permuteRows(params.get(p + linear + ".weight").value(), order, c);
            if (config.bias()) permuteRows(params.get(p + linear + ".bias").value(), order, 1);
        }
        Tensor out = params.get(p + outputLinear(config) + ".weight").value();   // [C, F]
        double[] w = out.toDoubleArray(), moved = new double[w.length];
        for (int r = 0; r < c; r++) for (int j = 0; j < f; j++) moved[r * f + j] = w[r * f + order[j]];
        out.copyFrom(moved);
    }

    private static void permuteRows(Tensor t, int[] order, int width) {
        double[] w = t.toDoubleArray(), moved = new double[w.length];
        for (int j = 0; j < order.length; j++) System.arraycopy(w, order[j] * width, moved, j * width, width);
        t.copyFrom(moved);
    }

    /** The linears whose output rows are the FFN's neurons. */
    static List<String> inputLinears(ModelConfig config) {
        return config.mlp() == ModelConfig.Mlp.GELU ? List.of("fc") : List.of("gate", "up");
    }

    /** The linear whose input columns are the FFN's neurons. */
    static String outputLinear(ModelConfig config) {
        return config.mlp() == ModelConfig.Mlp.GELU ? "proj" : "down";
    }
}
