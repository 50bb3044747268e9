package dev.shardwise.model;

/**
 * Initial weight scales. GPT-2 (Radford et al. 2019): N(0, 0.02²) for every matrix, and the two projections
 * that write into the residual stream of each block scaled by 1/sqrt(2L). DeepNet (Wang et al. 2022): the
 * feed-forward matrices, the value projection and the attention output projection scaled by
 * β = (8L)^(-1/4) instead, with the residual branch multiplied by α = (2L)^(1/4) in forward.
 */
final class GptInit {
    /** Standard deviation of every matrix that is not scaled (GPT-2). */
    static final double STD = 0.02;

    private GptInit() { }

    /** Std of the projections that write into the residual stream (attention output, MLP output). */
    static double residualProjection(ModelConfig c) {
        return c.residual() == ModelConfig.Residual.DEEPNORM ? STD * deepNormBeta(c) : STD / Math.sqrt(2.0 * c.layers());
    }

    /** Std of the MLP's input matrices and the value projection. */
    static double branchInput(ModelConfig c) {
        return c.residual() == ModelConfig.Residual.DEEPNORM ? STD * deepNormBeta(c) : STD;
    }

    /** The factor on the residual stream x in x·α + F(x): (2L)^(1/4) for DeepNorm, 1 otherwise. */
    static double residualAlpha(ModelConfig c) {
        return c.residual() == ModelConfig.Residual.DEEPNORM ? Math.pow(2.0 * c.layers(), 0.25) : 1.0;
    }

    private static double deepNormBeta(ModelConfig c) {
        return Math.pow(8.0 * c.layers(), -0.25);
    }
}
