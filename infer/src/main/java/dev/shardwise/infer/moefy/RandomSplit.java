package dev.shardwise.infer.moefy;

import java.util.SplittableRandom;

/**
 * MoEfication's random split (Zhang et al. 2022), the baseline for {@link BalancedKMeans}: the F neurons shuffled
 * (seeded Fisher-Yates) and cut into E experts of F/E, so any gain of the clustered split over it is the clustering's.
 */
final class RandomSplit {
    private RandomSplit() { }

    /**
     * The expert of each of {@code neurons} neurons, {@code experts} groups of equal size.
     *
     * @throws IllegalArgumentException if experts does not divide neurons
     */
    static int[] assign(int neurons, int experts, long seed) {
        if (experts < 1 || neurons % experts != 0) {
            throw new IllegalArgumentException(experts + " experts do not divide " + neurons + " neurons into equal groups");
        }
        int[] order = new int[neurons];
        for (int i = 0; i < neurons; i++) order[i] = i;
        SplittableRandom random = new SplittableRandom(seed);
        for (int i = neurons - 1; i > 0; i--) {
            int j = random.nextInt(i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        int[] assignment = new int[neurons];
        int size = neurons / experts;
        for (int p = 0; p < neurons; p++) assignment[order[p]] = p / size;
        return assignment;
    }
}
