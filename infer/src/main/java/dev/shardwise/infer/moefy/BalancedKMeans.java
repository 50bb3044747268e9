package dev.shardwise.infer.moefy;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Balanced k-means, MoEfication's parameter-clustering split (Zhang et al. 2022): F vectors (the neurons' input
 * weight vectors) into E clusters of exactly F/E each, so that neurons that read similar directions of the input,
 * and so tend to fire together, land in the same expert.
 *
 * <p>Lloyd's iteration with a capacity on every cluster: centers start by k-means++ (seeded), then each round assigns
 * the (neuron, center) pairs in increasing squared distance, a neuron taking the nearest center that still has room
 * (a greedy balanced assignment), and moves each center to its members' mean, until no neuron changes cluster or the
 * round limit is reached. Deterministic for a seed.
 */
final class BalancedKMeans {
    /** What a clustering found: the cluster of each vector, the rounds run and the final sum of squared distances. */
    record Result(int[] assignment, int rounds, double inertia) { }

    private BalancedKMeans() { }

    /**
     * Clusters {@code vectors} [F][D] into {@code clusters} groups of F/clusters.
     *
     * @throws IllegalArgumentException if clusters does not divide F
     */
    static Result cluster(double[][] vectors, int clusters, long seed, int maxRounds) {
        int f = vectors.length, d = vectors[0].length;
        if (clusters < 1 || f % clusters != 0) {
            throw new IllegalArgumentException(clusters + " clusters do not divide " + f + " vectors into equal groups");
        }
        int capacity = f / clusters;
        double[][] centers = initialCenters(vectors, clusters, new SplittableRandom(seed));
        int[] assignment = new int[f];
        Arrays.fill(assignment, -1);
        int rounds = 0;
        double inertia = Double.NaN;
        for (; rounds < maxRounds; rounds++) {
            double[] dist = new double[f * clusters];
            for (int i = 0; i < f; i++) for (int k = 0; k < clusters; k++) dist[i * clusters + k] = squaredDistance(vectors[i], centers[k]);
            Integer[] order = new Integer[f * clusters];
            for (int p = 0; p < order.length; p++) order[p] = p;
            Arrays.sort(order, (a, b) -> dist[a] != dist[b] ? Double.compare(dist[a], dist[b]) : Integer.compare(a, b));
            int[] next = new int[f];
            Arrays.fill(next, -1);
            int[] members = new int[clusters];
            inertia = 0;
            for (int p : order) {
                int i = p / clusters, k = p % clusters;
                if (next[i] >= 0 || members[k] == capacity) continue;
                next[i] = k;
                members[k]++;
                inertia += dist[p];
            }
            boolean changed = !Arrays.equals(next, assignment);
            assignment = next;
            for (double[] c : centers) Arrays.fill(c, 0);
            for (int i = 0; i < f; i++) for (int j = 0; j < d; j++) centers[assignment[i]][j] += vectors[i][j] / capacity;
            if (!changed) break;
        }
        return new Result(assignment, rounds, inertia);
    }

    /** k-means++: the first center uniformly, each next one with probability proportional to its squared distance. */
    private static double[][] initialCenters(double[][] vectors, int clusters, SplittableRandom random) {
        int f = vectors.length;
        double[][] centers = new double[clusters][];
        centers[0] = vectors[random.nextInt(f)].clone();
        double[] nearest = new double[f];
        Arrays.fill(nearest, Double.MAX_VALUE);
        for (int k = 1; k < clusters; k++) {
            double total = 0;
            for (int i = 0; i < f; i++) {
                nearest[i] = Math.min(nearest[i], squaredDistance(vectors[i], centers[k - 1]));
                total += nearest[i];
            }
            double pick = random.nextDouble() * total;
            int chosen = f - 1;
            for (int i = 0; i < f; i++) {
                pick -= nearest[i];
                if (pick < 0) { chosen = i; break; }
            }
            centers[k] = vectors[chosen].clone();
        }
        return centers;
    }

    static double squaredDistance(double[] a, double[] b) {
        double s = 0;
        for (int j = 0; j < a.length; j++) {
            double t = a[j] - b[j];
            s += t * t;
        }
        return s;
    }
}
