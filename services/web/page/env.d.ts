// The page imports uPlot's stylesheet; esbuild puts it into app.css.
declare module '*.css';
