package dev.shardwise.train;

/**
 * The mutable progress of a run, saved in every checkpoint so a resumed run continues bit for bit: the
 * optimizer steps done, where the training data sampler stands, and the tokens consumed so far.
 * The model's weights and the optimizer's moments are saved beside it, by name.
 */
public final class TrainState {
    private long step;
    private long samplerEpoch;
    private long samplerIndex;
    private long tokensSeen;

    /** Optimizer steps completed. */
    public long step() { return step; }
    public long samplerEpoch() { return samplerEpoch; }
    public long samplerIndex() { return samplerIndex; }
    public long tokensSeen() { return tokensSeen; }

    void completeStep(long tokens, long epoch, long index) {
        step++;
        tokensSeen += tokens;
        samplerEpoch = epoch;
        samplerIndex = index;
    }

    void restore(long step, long samplerEpoch, long samplerIndex, long tokensSeen) {
        this.step = step;
        this.samplerEpoch = samplerEpoch;
        this.samplerIndex = samplerIndex;
        this.tokensSeen = tokensSeen;
    }
}
