package dev.shardwise.train;

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
import java.util.List;
import java.util.Locale;

/** Draws the training and validation loss curves of a run into a PNG (Java2D, headless). */
final class LossPlot {
    private static final int WIDTH = 900, HEIGHT = 540, LEFT = 70, RIGHT = 20, TOP = 40, BOTTOM = 55;
    private static final Color TRAIN = new Color(0x1f77b4), VAL = new Color(0xd62728);

    private LossPlot() { }

    /** A point of a curve. */
    record Point(double step, double loss) { }

    /** Writes the plot to {@code file} (temporary name, then rename). */
    static void write(Path file, String title, List<Point> train, List<Point> val) throws IOException {
        BufferedImage image = new BufferedImage(WIDTH, HEIGHT, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = image.createGraphics();
        try {
            draw(g, title, train, val);
        } finally {
            g.dispose();
        }
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        if (!ImageIO.write(image, "png", tmp.toFile())) throw new IOException("no PNG writer in this JVM");
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static void draw(Graphics2D g, String title, List<Point> train, List<Point> val) {
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, WIDTH, HEIGHT);
        double maxStep = 1, minLoss = Double.MAX_VALUE, maxLoss = -Double.MAX_VALUE;
        for (List<Point> curve : List.of(train, val)) {
            for (Point p : curve) {
                if (!Double.isFinite(p.loss)) continue;
                maxStep = Math.max(maxStep, p.step);
                minLoss = Math.min(minLoss, p.loss);
                maxLoss = Math.max(maxLoss, p.loss);
            }
        }
        if (minLoss > maxLoss) { minLoss = 0; maxLoss = 1; }
        double pad = Math.max(1e-3, (maxLoss - minLoss) * 0.05);
        double lo = Math.max(0, minLoss - pad), hi = maxLoss + pad;
        int plotW = WIDTH - LEFT - RIGHT, plotH = HEIGHT - TOP - BOTTOM;

        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        g.setColor(new Color(0xdddddd));
        for (int i = 0; i <= 5; i++) {
            int y = TOP + plotH * i / 5;
            g.drawLine(LEFT, y, LEFT + plotW, y);
            int x = LEFT + plotW * i / 5;
            g.drawLine(x, TOP, x, TOP + plotH);
        }
        g.setColor(Color.DARK_GRAY);
        g.drawRect(LEFT, TOP, plotW, plotH);
        for (int i = 0; i <= 5; i++) {
            double loss = hi - (hi - lo) * i / 5;
            g.drawString(String.format(Locale.ROOT, "%.2f", loss), 8, TOP + plotH * i / 5 + 4);
            String step = String.format(Locale.ROOT, "%d", Math.round(maxStep * i / 5));
            g.drawString(step, LEFT + plotW * i / 5 - g.getFontMetrics().stringWidth(step) / 2, TOP + plotH + 18);
        }
        g.drawString("step", LEFT + plotW / 2 - 12, HEIGHT - 12);
        g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 14));
        g.drawString(title, LEFT, 24);

        double xScale = plotW / maxStep, yScale = plotH / (hi - lo);
        g.setStroke(new BasicStroke(1.5f));
        curve(g, train, TRAIN, xScale, yScale, lo, plotH, false);
        curve(g, val, VAL, xScale, yScale, lo, plotH, true);

        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        int lx = LEFT + plotW - 150, ly = TOP + 16;
        g.setColor(TRAIN);
        g.fillRect(lx, ly - 8, 14, 4);
        g.setColor(Color.DARK_GRAY);
        g.drawString("train loss", lx + 20, ly - 2);
        g.setColor(VAL);
        g.fillOval(lx + 3, ly + 8, 7, 7);
        g.setColor(Color.DARK_GRAY);
        g.drawString("validation loss", lx + 20, ly + 16);
    }

    private static void curve(Graphics2D g, List<Point> points, Color color, double xScale, double yScale, double lo,
                              int plotH, boolean markers) {
        g.setColor(color);
        Path2D.Double path = new Path2D.Double();
        boolean started = false;
        for (Point p : points) {
            if (!Double.isFinite(p.loss)) continue;
            double x = LEFT + p.step * xScale, y = TOP + plotH - (p.loss - lo) * yScale;
            if (!started) path.moveTo(x, y);
            else path.lineTo(x, y);
            started = true;
            if (markers) g.fillOval((int) x - 3, (int) y - 3, 7, 7);
        }
        g.draw(path);
    }
}
