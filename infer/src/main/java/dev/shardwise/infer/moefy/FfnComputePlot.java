package dev.shardwise.infer.moefy;

import javax.imageio.ImageIO;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.geom.Path2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Locale;

/**
 * Draws MoEfication's trade-off into a PNG (Java2D, headless; a sibling of train's loss plot): validation loss
 * against the fraction of FFN compute K/E, one marker per K (the routers' choice, and the ground-truth choice when
 * it was measured), and the dense model's loss as a dashed line.
 */
final class FfnComputePlot {
    private static final int WIDTH = 900, HEIGHT = 540, LEFT = 70, RIGHT = 20, TOP = 40, BOTTOM = 55;
    private static final Color SPARSE = new Color(0x1f77b4), DENSE = new Color(0xd62728), ORACLE = new Color(0x2ca02c);

    private FfnComputePlot() { }

    /** Writes the plot of {@code result} to {@code file} (temporary name, then rename). */
    static void write(Path file, String title, MoefyEvaluation.Result result) throws IOException {
        BufferedImage image = new BufferedImage(WIDTH, HEIGHT, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = image.createGraphics();
        try {
            draw(g, title, result);
        } finally {
            g.dispose();
        }
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        if (!ImageIO.write(image, "png", tmp.toFile())) throw new IOException("no PNG writer in this JVM");
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static void draw(Graphics2D g, String title, MoefyEvaluation.Result r) {
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, WIDTH, HEIGHT);
        double lo = r.denseLoss(), hi = r.denseLoss();
        boolean oracle = false;
        for (MoefyEvaluation.Point p : r.points()) {
            for (double v : new double[]{p.loss(), p.oracleLoss()}) {
                if (!Double.isFinite(v)) continue;
                lo = Math.min(lo, v);
                hi = Math.max(hi, v);
            }
            oracle |= Double.isFinite(p.oracleLoss());
        }
        if (!Double.isFinite(lo) || !Double.isFinite(hi)) { lo = 0; hi = 1; }
        double pad = Math.max(1e-3, (hi - lo) * 0.08);
        lo = Math.max(0, lo - pad);
        hi += pad;
        int plotW = WIDTH - LEFT - RIGHT, plotH = HEIGHT - TOP - BOTTOM;

        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        g.setColor(new Color(0xdddddd));
        for (int i = 0; i <= 5; i++) g.drawLine(LEFT, TOP + plotH * i / 5, LEFT + plotW, TOP + plotH * i / 5);
        for (int i = 0; i <= 4; i++) g.drawLine(LEFT + plotW * i / 4, TOP, LEFT + plotW * i / 4, TOP + plotH);
        g.setColor(Color.DARK_GRAY);
        g.drawRect(LEFT, TOP, plotW, plotH);
        for (int i = 0; i <= 5; i++) {
            g.drawString(String.format(Locale.ROOT, "%.3f", hi - (hi - lo) * i / 5), 8, TOP + plotH * i / 5 + 4);
        }
        for (int i = 0; i <= 4; i++) {
            String label = (25 * i) + "%";
            g.drawString(label, LEFT + plotW * i / 4 - g.getFontMetrics().stringWidth(label) / 2, TOP + plotH + 18);
        }
        g.drawString("fraction of FFN compute (K of E experts per token)", LEFT + plotW / 2 - 150, HEIGHT - 12);
        g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 14));
        g.drawString(title, LEFT, 24);

        double yScale = plotH / (hi - lo);
        if (Double.isFinite(r.denseLoss())) {
            int y = (int) Math.round(TOP + plotH - (r.denseLoss() - lo) * yScale);
            g.setColor(DENSE);
            g.setStroke(new BasicStroke(1.5f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 10f, new float[]{8f, 6f}, 0f));
            g.drawLine(LEFT, y, LEFT + plotW, y);
        }
        g.setStroke(new BasicStroke(1.8f));
        series(g, r, false, SPARSE, plotW, plotH, lo, yScale);
        if (oracle) series(g, r, true, ORACLE, plotW, plotH, lo, yScale);

        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        int lx = LEFT + plotW - 230, ly = TOP + 16;
        g.setColor(SPARSE);
        g.fillOval(lx + 3, ly - 10, 8, 8);
        g.setColor(Color.DARK_GRAY);
        g.drawString("MoEfied, top-K experts by router", lx + 20, ly - 2);
        g.setColor(DENSE);
        g.fillRect(lx, ly + 8, 14, 3);
        g.setColor(Color.DARK_GRAY);
        g.drawString(String.format(Locale.ROOT, "dense model (%.4f)", r.denseLoss()), lx + 20, ly + 14);
        if (oracle) {
            g.setColor(ORACLE);
            g.fillRect(lx + 3, ly + 22, 8, 8);
            g.setColor(Color.DARK_GRAY);
            g.drawString("ground-truth top-K experts (bound)", lx + 20, ly + 30);
        }
    }

    /** One curve through the points: the routers' losses, or the ground-truth ones (square markers). */
    private static void series(Graphics2D g, MoefyEvaluation.Result r, boolean oracle, Color color, int plotW, int plotH,
                               double lo, double yScale) {
        g.setColor(color);
        Path2D.Double path = new Path2D.Double();
        boolean started = false;
        for (MoefyEvaluation.Point p : r.points()) {
            double loss = oracle ? p.oracleLoss() : p.loss();
            if (!Double.isFinite(loss)) continue;
            double x = LEFT + p.computeFraction() * plotW, y = TOP + plotH - (loss - lo) * yScale;
            if (!started) path.moveTo(x, y);
            else path.lineTo(x, y);
            started = true;
            if (oracle) g.fillRect((int) x - 4, (int) y - 4, 8, 8);
            else g.fillOval((int) x - 4, (int) y - 4, 9, 9);
        }
        g.draw(path);
    }
}
