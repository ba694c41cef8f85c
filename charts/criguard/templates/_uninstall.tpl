{{/*
criguard.uninstallDaemonSet (dict "ctx" . "annotations" map): one pod per node
points kubelet back at containerd (restoring its original files), restarts
kubelet, then stops and removes criguard's unit and binary; Ready once nothing
of the install is left on its node. Rendered by uninstall.yaml
(uninstall.enabled) and, as a pre-delete hook, by uninstall-hook.yaml.
*/}}
{{- define "criguard.uninstallDaemonSet" -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ include "criguard.fullname" .ctx }}-uninstall
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "criguard.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: uninstall
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "criguard.selector" (dict "ctx" .ctx "component" "uninstall") | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "criguard.selector" (dict "ctx" .ctx "component" "uninstall") | nindent 8 }}
    spec:
      serviceAccountName: {{ include "criguard.serviceAccountName" .ctx }}
      automountServiceAccountToken: false
      priorityClassName: {{ .ctx.Values.priorityClassName }}
      {{- with .ctx.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .ctx.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .ctx.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      hostPID: true
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      terminationGracePeriodSeconds: 5
      containers:
      - name: uninstall
        image: {{ include "criguard.image" (dict "ctx" .ctx "img" .ctx.Values.image) }}
        imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
        args:
        - node
        - uninstall
        - --host-root=/host
        - --hold
        {{- if .ctx.Values.uninstall.purge }}
        - --purge
        {{- end }}
        securityContext:
          privileged: true
        readinessProbe:
          exec:
            command: [{{ .ctx.Values.image.binary }}, node, status, --expect=uninstalled, --host-root=/host]
          initialDelaySeconds: 5
          periodSeconds: 5
          timeoutSeconds: 10
        resources:
          {{- toYaml .ctx.Values.uninstall.resources | nindent 10 }}
        volumeMounts:
        - name: host
          mountPath: /host
      volumes:
      - name: host
        hostPath:
          path: /
          type: Directory
{{- end -}}

{{/*
criguard.hookAnnotations (dict "weight" N "keep" BOOL): a pre-delete hook. Deleted
once every hook succeeded, unless keep: the uninstall DaemonSet must outlive a
failed wait (Helm deletes the hooks that succeeded when a later one fails, and
a DaemonSet counts as succeeded once created), or nodes half-restored would be
left with no agent to finish; the wait Job deletes it once it is Ready.
*/}}
{{- define "criguard.hookAnnotations" -}}
helm.sh/hook: pre-delete
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: {{ if .keep }}before-hook-creation{{ else }}before-hook-creation,hook-succeeded{{ end }}
{{- end -}}

{{/* criguard.hookName: the hook objects' name prefix, short enough that a Job's name (and its pods' job-name label) stays within 63 characters. */}}
{{- define "criguard.hookName" -}}
{{- include "criguard.fullname" . | trunc 40 | trimSuffix "-" }}-uninstall
{{- end -}}

{{/*
criguard.hookJob (dict "ctx" . "weight" N "command" C "args" LIST "suffix" S):
`criguard-sync C ARGS...` as a pre-delete hook Job named HOOKNAME-S. It runs as
an ordinary pod (default tolerations and priority: it must not land on a
cordoned or NotReady node, nor preempt workloads), so the nodes' policy must
allow the criguard-sync image, as it must for the installer's own sidecar.
*/}}
{{- define "criguard.hookJob" -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "criguard.hookName" .ctx }}-{{ .suffix }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "criguard.labels" .ctx | nindent 4 }}
    app.kubernetes.io/component: uninstall-hook
  annotations:
    {{- include "criguard.hookAnnotations" (dict "weight" .weight) | nindent 4 }}
    # Helm prints the Job's log when it fails: the nodes not yet restored.
    helm.sh/hook-output-log-policy: hook-failed
spec:
  # The command retries API errors itself until its --timeout, but its pod
  # may fail to start at all: it is created while the nodes' kubelets are
  # being repointed and restarted (seen on kind: StartError). A new pod
  # starts the wait over; activeDeadlineSeconds bounds them all.
  backoffLimit: 3
  # Room for the pod to be scheduled and its image pulled before the command's
  # own --timeout, so that the command, not the deadline, says what is missing.
  activeDeadlineSeconds: {{ add .ctx.Values.uninstall.hookTimeoutSeconds 90 }}
  template:
    metadata:
      labels:
        {{- include "criguard.selector" (dict "ctx" .ctx "component" "uninstall-hook") | nindent 8 }}
    spec:
      serviceAccountName: {{ include "criguard.hookName" .ctx }}-hook
      restartPolicy: Never
      {{- with .ctx.Values.uninstall.hookTolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: {{ .command }}
        image: {{ include "criguard.image" (dict "ctx" .ctx "img" .ctx.Values.syncImage) }}
        imagePullPolicy: {{ .ctx.Values.syncImage.pullPolicy }}
        command: [{{ .ctx.Values.syncImage.binary }}]
        args:
        - {{ .command }}
        - --namespace={{ .ctx.Release.Namespace }}
        - --timeout={{ .ctx.Values.uninstall.hookTimeoutSeconds }}s
        {{- range .args }}
        - {{ . }}
        {{- end }}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: [ALL]
        resources:
          {{- toYaml .ctx.Values.uninstall.resources | nindent 10 }}
{{- end -}}
